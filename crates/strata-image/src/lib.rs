//! Image operations that are not a build: pulling into and pushing from the
//! store ([`registry`]), and preparing an image's layers as snapshots for a
//! container ([`lowers`]). `strata pull`, `strata push` and `strata run` use
//! this crate without the solver; the solver uses it for its base images.
//! Like every library crate it never prints: progress is reported through
//! [`registry::TransferEvent`]s.

pub mod registry;
mod snapshots;

pub use snapshots::{lowers, lowers_counted};

/// What went wrong moving or preparing an image, with its cause chained.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    #[error(transparent)]
    Registry(#[from] strata_registry::RegistryError),
    #[error(transparent)]
    Exec(#[from] strata_exec::ExecError),
    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// What a registry served contradicts itself (a config and manifest
    /// that disagree, a layer that is not what the config says).
    #[error("{0}; refused")]
    Inconsistent(String),
    /// A push target without a tag.
    #[error("{0}: push needs a tag, not only a digest")]
    NoTag(String),
    #[error("config of {what}")]
    Config {
        what: String,
        #[source]
        source: strata_oci::image::ImageError,
    },
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
