//! The formats everything in strata writes through: content digests, the
//! atomic-write helper, layer tars (writer, reader, applier), compression, image
//! configs, manifests and indexes, and the archive formats users ship (OCI image
//! layout, docker-archive).
//!
//! Owns no policy about where things live on disk beyond a blob directory's
//! layout, and never prints. Depends on nothing else in strata.

pub mod apply;
pub mod atomic;
pub mod blobs;
pub mod change;
pub mod compress;
pub mod digest;
pub mod layer;
pub mod path;
pub mod reference;

pub use atomic::{atomic_write, AtomicFile};
pub use blobs::{BlobError, BlobStore, BlobWriter};
pub use change::{Change, ChangeKind};
pub use compress::Compression;
pub use digest::{Digest, DigestError, DigestingReader, DigestingWriter};
