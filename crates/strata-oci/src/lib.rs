//! The formats everything in strata writes through: content digests, the
//! atomic-write helper, layer tars (writer, reader, applier), compression, image
//! configs, manifests and indexes, and the archive formats users ship (OCI image
//! layout, docker-archive).
//!
//! Owns no policy about where things live on disk beyond a blob directory's
//! layout, and never prints. Depends on nothing else in strata.
//!
//! Where to start: [`blobs::BlobStore`] (content-addressed, verified),
//! [`layer::write_layer`] (changes -> compressed layer, diffID and digest in
//! one pass), [`apply::apply_layer`] (layer tar -> directory, never escaping
//! it), [`image`] (config, manifest, index), [`archive`] (OCI layout and
//! docker-archive, both ways), [`path::secure_join`].
//!
//! # Reproducibility: what is normalised
//!
//! Layer tars: entry order (sorted by path, parents first), header format
//! (ustar + PAX only where needed), user/group names (empty), atime/ctime
//! (never written), mtimes (clamped to the build epoch when one is given:
//! later ones become the epoch, earlier ones are kept), whiteout entries
//! (mode 0, uid/gid 0, mtime = epoch or 0), the xattr set (only
//! `security.capability`, `user.*`, `trusted.*` minus overlayfs' own,
//! sorted). Compression: gzip header has no name, mtime 0, OS unknown; block
//! boundaries are fixed so the thread count never matters; zstd always
//! multithreaded mode. Archives: sorted names, mtime 0, uid/gid 0, fixed
//! modes. JSON: fixed field order, sorted maps, compact.
//!
//! Not normalised (they are content): file modes (so a umask that changes
//! what a RUN creates changes the layer), uid/gid, file data, symlink
//! targets, mtimes earlier than the epoch, and the set of paths.

pub mod apply;
pub mod archive;
pub mod atomic;
pub mod attestation;
pub mod blobs;
pub mod change;
pub mod compress;
pub mod digest;
pub mod image;
pub mod io_error;
pub mod layer;
pub mod layer_check;
pub mod path;
pub mod platform;
pub mod reference;
pub mod sparse;

pub use atomic::{AtomicFile, atomic_write, atomic_write_shared};
pub use blobs::{BlobError, BlobStore, BlobWriter};
pub use change::{Change, ChangeKind};
pub use compress::Compression;
pub use digest::{Digest, DigestError, DigestingReader, DigestingWriter};
pub use io_error::IoError;
pub use layer::{LayerInfo, LayerOptions, changes_for_tree, write_layer};
pub use platform::Platform;
