//! The archive formats users ship and load: the OCI image layout (a folder,
//! or the same as a tar) and the docker-archive (`docker save`/`docker load`).
//!
//! A docker-archive is written the way Docker 25+ writes it: an OCI layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) plus `manifest.json`
//! (Config/RepoTags/Layers pointing into `blobs/`) and `repositories`. Docker
//! 20.10's `docker load` reads only `manifest.json` and opens the files it
//! names, decompressing layers itself and checking them against the config's
//! diffIDs, so no legacy `<id>/layer.tar` directories are needed; newer tools
//! can read the same file as an OCI layout.
//!
//! Several images may go into one archive; blobs they share are stored once.
//! Tar output is deterministic: sorted names, mtime 0, uid/gid 0, fixed modes.
//!
//! Reading accepts both formats (also Docker 20.10's legacy layout with
//! `<id>/layer.tar`), from a tar (compressed or not) or a layout folder,
//! streams every blob into a [`BlobStore`] while hashing it, and checks the
//! digests: blob names, manifest references and the config's diffIDs, which
//! it computes by reading every layer through, checking on the way that each
//! entry is one the layer applier accepts (so a load never stores an image
//! that cannot be unpacked later).
//!
//! `write` holds the writers, `read` the readers, `types` what both share.

mod read;
mod types;
mod write;

pub use read::{read_archive, read_archive_for_platform, read_archive_from};
pub use types::{
    ArchiveError, ArchiveFormat, ArchiveImage, ArchiveIndex, DockerManifestEntry, LoadedImage,
    LoadedLayer, StoredImage,
};
pub use write::{
    write_archive, write_document_archive, write_document_dir, write_index_archive, write_oci_dir,
    write_oci_index_dir, write_stored_archive,
};
