//! The local image store under `$STRATA_ROOT`: content blobs, unpacked layer
//! snapshots, image records and tags, containers and the build cache, with
//! metadata in one transactional database.
//!
//! Invariant: a crash at any point leaves no tag pointing at a missing image and
//! no layer deleted while something refers to it. Every file write goes through
//! a temp-file + fsync + rename, and the order is always: blobs first, then one
//! metadata transaction (adding); or one metadata transaction first, then the
//! files nothing refers to any more (removing, see [`Store::gc`]). So a crash
//! leaves at worst unreferenced files, which the next garbage collection frees.
//!
//! References are computed, not counted: a blob or layer is live when an image
//! record, a container record or a build-cache record names it. That makes GC
//! exact by construction (there is no counter to drift after a crash).
//!
//! Locking: redb holds an exclusive lock on the database file while it is open,
//! so every operation opens it briefly (retrying while another process has it).
//! Writers additionally hold the store lock ([`Store::lock`]) across "put blobs,
//! then commit metadata", and GC holds it for its whole scan-and-delete, so GC
//! cannot free a blob between the two. Long-running work (a build, `save`,
//! `run`, `push`) does not hold it: it holds a [`Lease`] naming the blobs and
//! layers it writes or reads, which GC treats as roots, and takes the store
//! lock only around each commit and each addition to its lease. Work done
//! once per key across processes (unpacking a layer, downloading a blob)
//! waits on a per-key lock ([`Store::key_lock`]). See `lease`.
//!
//! Where things are: [`Store`] and its error here; `db` (tables, opening,
//! the lock, transactions), `records` (what the tables hold), `blobs` (the
//! content store and where blobs are known to live remotely), `images`
//! (image records and tags), `containers`, `cache` (build cache, context
//! metadata, re-encoded layers), `snapshots`, `lease` (leases and per-key locks), `scratch` (owned scratch directories under `tmp/`, and
//! finding what killed processes left there), `layer_index` (each layer's
//! content index and the tree a chain of them makes), `gc` (GC and `check`), `ship` (layers
//! in the encoding they are shipped in, made on first need);
//! `image` writes new images (layers, configs, import, commit), `layer`
//! reads layer tars as trees and diffs, `archive` is `save`/`load` over
//! strata-oci's archive codec, `reference` normalises image names.

mod archive;
mod blobs;
mod cache;
mod containers;
mod db;
mod gc;
mod image;
mod images;
mod layer;
mod layer_index;
mod lease;
mod records;
mod reference;
mod scratch;
mod ship;
mod snapshots;
mod time;

use std::path::PathBuf;

use strata_oci::Digest;

pub use archive::{LoadedImage, load_archive, save_archive};
pub use image::{
    commit_container, empty_config, host_arch, import_rootfs, layer_record_for_blob, put_layer,
    write_image,
};
pub use layer::{DiffKind, DiffLine, diff_container, diff_images, diff_top_layer, tree_of};
pub use layer_index::{EntryKind, IndexEntry, IndexItem, LayerIndex, MergedTree};
pub use lease::{KeyKind, KeyLock, Lease};
pub use records::{
    CacheRecord, CheckReport, ContainerRecord, CtxMeta, EncodedLayer, GcReport, ImageRecord,
    LayerRecord, OwnerProcess, Problem, RmiEvent, RmiOptions,
};
pub use reference::{familiar, normalize_reference, split_repo_tag};
pub use scratch::{Remover, ScratchDir, ScratchEntry, ScratchReport, disk_usage};
pub use ship::Shipped;
pub use time::{now_unix, parse_rfc3339, rfc3339};

/// Media type of an uncompressed layer tar.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed layer tar.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store database {}", path.display())]
    Db {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("corrupt record {key} in table {table}")]
    Record {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// The image was resolved, then removed by another process before this
    /// one could lease it: not a corrupt store.
    #[error("image {0} was removed meanwhile (by another strata command) before it could be read")]
    ImageRemoved(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("{0}")]
    Conflict(String),
    #[error("blob {digest} is missing from the store")]
    MissingBlob { digest: Digest },
    #[error("blob {expected} has content digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error(transparent)]
    Blob(strata_oci::blobs::BlobError),
    #[error("archive {}", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: strata_oci::archive::ArchiveError,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// Proof that this process holds the store's writer lock; mutating operations
/// take it so that "put blobs, commit metadata" is never interleaved with GC.
pub struct WriteLock {
    _file: std::fs::File,
}

/// The store. Cheap to open; holds no file open between operations.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
}
