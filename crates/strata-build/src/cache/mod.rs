//! Step results: their keys, the store's local cache, and remote caches
//! (`--cache-from`/`--cache-to`).

use serde::{Deserialize, Serialize};
use strata_oci::image::ImageConfig;
use strata_store::LayerRecord;

mod key;
mod local;
pub mod remote;
pub(crate) mod spec;

pub(crate) use key::key_of;

/// The cached outcome of one step.
#[derive(Serialize, Deserialize)]
pub(crate) struct CachedStep {
    pub(crate) layer: Option<LayerRecord>,
    pub(crate) config: ImageConfig,
}

/// Mixed into every base key: bump it when a step's semantics change, so
/// results cached by an older strata are never reused.
pub(crate) const CACHE_VERSION: &[u8] = b"strata-cache-v3";
