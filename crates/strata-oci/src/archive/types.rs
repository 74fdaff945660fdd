//! What the archive reader and writer share: errors, the images an
//! archive holds, and the naming rules of both formats.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::blobs::BlobError;
use crate::compress::Detected;
use crate::digest::Digest;
use crate::image::{ImageConfig, ImageError, Manifest, Platform};
use crate::io_error::IoError;
use crate::layer_check::EntryError;

/// Largest JSON file (index, manifest, config) read into memory.
pub(crate) const MAX_JSON: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("invalid {what} in the archive")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the archive is neither an OCI image layout nor a docker-archive (no index.json or manifest.json)"
    )]
    UnknownFormat,
    #[error("the archive refers to {what}, which it does not contain")]
    Missing { what: String },
    #[error("{what} in the archive hashes to {actual}, expected {expected}")]
    Mismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("the archive's {what} is larger than {MAX_JSON} bytes")]
    TooLarge { what: String },
    #[error("image name {0:?} has no tag or digest")]
    BadName(String),
    #[error("the archive contains no image (its {0} lists none)")]
    NoImages(&'static str),
    #[error("the archive's {name:?} links to {target:?}, which is outside the archive")]
    LinkOutside { name: String, target: String },
    #[error("layer {what} cannot be unpacked")]
    BadLayer {
        what: String,
        #[source]
        source: EntryError,
    },
    #[error("layer {what} is {kind}-compressed, which image layers cannot be")]
    LayerCompression { what: String, kind: &'static str },
}

pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ArchiveError {
    let wrap = IoError::at(op, path);
    move |source| ArchiveError::Io(wrap(source))
}

/// One image to write: its OCI manifest (whose config and layer blobs are in
/// the [`BlobStore`] passed along) and the names it should carry
/// (`registry/repo:tag`, as `-t` gave them; may be empty).
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub manifest: Manifest,
    pub names: Vec<String>,
    /// Annotations of the manifest's entries in `index.json`
    /// (`manifest-descriptor:`); a docker-archive has nowhere for them.
    pub descriptor_annotations: std::collections::BTreeMap<String, String>,
}

/// A multi-platform image: one manifest per platform (config and layer
/// blobs in the [`BlobStore`] passed along), written as an OCI image index
/// with each manifest's `platform`, under the names it should carry.
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    pub manifests: Vec<(Manifest, Platform)>,
    pub names: Vec<String>,
}

/// An image whose manifest is already a blob in the [`BlobStore`]
/// (passed along): written with the manifest's bytes and digest as stored.
///
/// [`BlobStore`]: crate::blobs::BlobStore
#[derive(Debug, Clone)]
pub struct StoredImage {
    pub manifest: Digest,
    pub names: Vec<String>,
}

/// One image read back from an archive: its manifest (OCI media types), the
/// digest of that manifest's JSON (stored in the blob store too), its
/// config, its layers as they decompress, and its names.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub manifest: Manifest,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    /// One per `manifest.layers` entry, in order.
    pub layers: Vec<LoadedLayer>,
    pub names: Vec<String>,
}

/// A layer of a loaded image, read through once while loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedLayer {
    /// How the blob is compressed (from its magic bytes).
    pub compression: Detected,
    /// Digest of the uncompressed tar; equal to the config's diffID.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
}

/// A docker-archive `manifest.json` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// Which archive to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// OCI image layout.
    Oci,
    /// docker-archive (also a valid OCI layout, see the module docs).
    Docker,
}

pub(crate) fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Splits `repo:tag` / `repo@digest` (tag defaults to `latest`).
pub(crate) fn split_name(name: &str) -> Result<(String, String), ArchiveError> {
    if name.is_empty() {
        return Err(ArchiveError::BadName(name.to_owned()));
    }
    if let Some((repo, digest)) = name.split_once('@') {
        return Ok((repo.to_owned(), digest.to_owned()));
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => Ok((
            name[..slash + i].to_owned(),
            name[slash + i + 1..].to_owned(),
        )),
        None => Ok((name.to_owned(), "latest".to_owned())),
    }
}

/// Docker's short form of a repository (`docker.io/library/x` -> `x`).
pub(crate) fn docker_repo(repo: &str) -> String {
    let r = repo.strip_prefix("docker.io/").unwrap_or(repo);
    r.strip_prefix("library/")
        .filter(|s| !s.contains('/'))
        .unwrap_or(r)
        .to_owned()
}
