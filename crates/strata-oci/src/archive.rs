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
//! digests: blob names, manifest references and (for docker-archives) the
//! config's diffIDs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobStore};
use crate::compress::{self, Compression, Detected};
use crate::digest::{Digest, DigestingReader};
use crate::image::{
    ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, ImageConfig, ImageError,
    Index, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST, Manifest, Platform, canonical_json,
};

/// Largest JSON file (index, manifest, config) read into memory.
const MAX_JSON: u64 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("invalid {what} in the archive: {source}")]
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
}

fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.into();
    move |source| ArchiveError::Io { op, path, source }
}

/// One image to write: its OCI manifest (whose config and layer blobs are in
/// the [`BlobStore`] passed along) and the names it should carry
/// (`registry/repo:tag`, as `-t` gave them; may be empty).
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub manifest: Manifest,
    pub names: Vec<String>,
}

/// A multi-platform image: one manifest per platform (config and layer
/// blobs in the [`BlobStore`] passed along), written as an OCI image index
/// with each manifest's `platform`, under the names it should carry.
#[derive(Debug, Clone)]
pub struct ArchiveIndex {
    pub manifests: Vec<(Manifest, Platform)>,
    pub names: Vec<String>,
}

/// One image read back from an archive: its manifest (OCI media types), the
/// digest of that manifest's JSON (stored in the blob store too), its
/// config, and its names.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub manifest: Manifest,
    pub manifest_digest: Digest,
    pub config: ImageConfig,
    pub names: Vec<String>,
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

/// The files of an archive, in memory for the small ones and as blob
/// references for the rest.
struct Plan {
    files: BTreeMap<String, Vec<u8>>,
    blobs: BTreeSet<Digest>,
}

fn plan(
    store: &BlobStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
) -> Result<Plan, ArchiveError> {
    let mut files = BTreeMap::new();
    let mut blobs = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let mjson = img.manifest.to_json();
        let mdigest = Digest::of(&mjson);
        files.insert(blob_path(&mdigest), mjson.clone());
        for d in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
            if !store.contains(&d.digest) {
                return Err(ArchiveError::Missing {
                    what: format!("blob {}", d.digest),
                });
            }
            blobs.insert(d.digest);
        }
        let mt = if img.manifest.media_type.is_empty() {
            MEDIA_TYPE_OCI_MANIFEST
        } else {
            &img.manifest.media_type
        };
        let base = Descriptor::new(mt, mdigest, mjson.len() as u64);
        if img.names.is_empty() {
            index_entries.push(base.clone());
        }
        for name in &img.names {
            let mut d = base.clone();
            let (repo, tag) = split_name(name)?;
            d.annotations
                .insert(ANNOTATION_CONTAINERD_IMAGE_NAME.into(), name.clone());
            d.annotations
                .insert(ANNOTATION_REF_NAME.into(), tag.clone());
            index_entries.push(d);
            repositories
                .entry(docker_repo(&repo))
                .or_default()
                .insert(tag, img.manifest.config.digest.hex());
        }
        docker_entries.push(DockerManifestEntry {
            config: blob_path(&img.manifest.config.digest),
            repo_tags: Some(
                img.names
                    .iter()
                    .map(|n| split_name(n).map(|(r, t)| format!("{}:{t}", docker_repo(&r))))
                    .collect::<Result<_, _>>()?,
            ),
            layers: img
                .manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect(),
        });
    }
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".into(), Index::new(index_entries).to_json());
    if format == ArchiveFormat::Docker {
        files.insert("manifest.json".into(), canonical_json(&docker_entries));
        files.insert("repositories".into(), canonical_json(&repositories));
    }
    Ok(Plan { files, blobs })
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Splits `repo:tag` / `repo@digest` (tag defaults to `latest`).
fn split_name(name: &str) -> Result<(String, String), ArchiveError> {
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
fn docker_repo(repo: &str) -> String {
    let r = repo.strip_prefix("docker.io/").unwrap_or(repo);
    r.strip_prefix("library/")
        .filter(|s| !s.contains('/'))
        .unwrap_or(r)
        .to_owned()
}

/// Writes an OCI layout or docker-archive as a tar to `out`.
pub fn write_archive(
    out: impl Write,
    store: &BlobStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
) -> Result<(), ArchiveError> {
    write_plan_tar(out, store, &plan(store, images, format)?)
}

/// Writes a multi-platform image as an OCI layout tar to `out`: `index.json`
/// names one image index (under each of `index.names`), which lists a
/// manifest per platform, as `docker buildx build --platform A,B -o
/// type=oci` writes it.
pub fn write_index_archive(
    out: impl Write,
    store: &BlobStore,
    index: &ArchiveIndex,
) -> Result<(), ArchiveError> {
    write_plan_tar(out, store, &plan_index(store, index)?)
}

/// Like [`write_index_archive`], as an OCI layout folder (see [`write_oci_dir`]).
pub fn write_oci_index_dir(
    dir: &Path,
    store: &BlobStore,
    index: &ArchiveIndex,
) -> Result<(), ArchiveError> {
    write_plan_dir(dir, store, &plan_index(store, index)?)
}

/// The files of a multi-platform OCI layout (see [`write_index_archive`]).
fn plan_index(store: &BlobStore, index: &ArchiveIndex) -> Result<Plan, ArchiveError> {
    let mut files = BTreeMap::new();
    let mut blobs = BTreeSet::new();
    let mut entries = Vec::new();
    for (m, platform) in &index.manifests {
        for d in std::iter::once(&m.config).chain(&m.layers) {
            if !store.contains(&d.digest) {
                return Err(ArchiveError::Missing {
                    what: format!("blob {}", d.digest),
                });
            }
            blobs.insert(d.digest);
        }
        let json = m.to_json();
        let digest = Digest::of(&json);
        let mt = if m.media_type.is_empty() {
            MEDIA_TYPE_OCI_MANIFEST
        } else {
            &m.media_type
        };
        let mut d = Descriptor::new(mt, digest, json.len() as u64);
        d.platform = Some(platform.clone());
        entries.push(d);
        files.insert(blob_path(&digest), json);
    }
    let json = Index::new(entries).to_json();
    let digest = Digest::of(&json);
    let base = Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, json.len() as u64);
    files.insert(blob_path(&digest), json);
    let mut top = Vec::new();
    if index.names.is_empty() {
        top.push(base.clone());
    }
    for name in &index.names {
        let (_, tag) = split_name(name)?;
        let mut d = base.clone();
        d.annotations
            .insert(ANNOTATION_CONTAINERD_IMAGE_NAME.into(), name.clone());
        d.annotations.insert(ANNOTATION_REF_NAME.into(), tag);
        top.push(d);
    }
    files.insert(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    );
    files.insert("index.json".into(), Index::new(top).to_json());
    Ok(Plan { files, blobs })
}

/// Writes the files of `plan` as a tar: sorted names, fixed metadata.
fn write_plan_tar(out: impl Write, store: &BlobStore, plan: &Plan) -> Result<(), ArchiveError> {
    let werr = |e| ArchiveError::Io {
        op: "writing",
        path: PathBuf::from("the archive"),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    let mut names: BTreeMap<String, Option<Digest>> = BTreeMap::new();
    for f in plan.files.keys() {
        names.insert(f.clone(), None);
    }
    for d in &plan.blobs {
        names.insert(blob_path(d), Some(*d));
    }
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = header(dir, tar::EntryType::Directory, 0, 0o755).map_err(werr)?;
        b.append(&h, io::empty()).map_err(werr)?;
    }
    for (name, blob) in &names {
        match blob {
            Some(d) => {
                let size = store.size(d)?;
                let h = header(name, tar::EntryType::Regular, size, 0o644).map_err(werr)?;
                let mut r = store.open_verified(d)?;
                if let Err(e) = b.append(&h, &mut r) {
                    return Err(
                        match e.get_ref().is_some() && e.kind() == io::ErrorKind::InvalidData {
                            true => ArchiveError::Blob(r.take_error(e)),
                            false => werr(e),
                        },
                    );
                }
            }
            None => {
                let data = plan.files.get(name).map(Vec::as_slice).unwrap_or_default();
                let h = header(name, tar::EntryType::Regular, data.len() as u64, 0o644)
                    .map_err(werr)?;
                b.append(&h, data).map_err(werr)?;
            }
        }
    }
    b.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}

fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

/// Writes an OCI layout folder at `dir` (created if needed; blobs already
/// there are kept, `index.json` is replaced atomically).
pub fn write_oci_dir(
    dir: &Path,
    store: &BlobStore,
    images: &[ArchiveImage],
) -> Result<(), ArchiveError> {
    write_plan_dir(dir, store, &plan(store, images, ArchiveFormat::Oci)?)
}

/// Writes the files of `plan` into the layout folder `dir`: blobs first,
/// `index.json` after every blob, each atomically, so a reader never sees an index
/// naming a blob that is not there yet.
fn write_plan_dir(dir: &Path, store: &BlobStore, plan: &Plan) -> Result<(), ArchiveError> {
    let target = BlobStore::open_shared(dir.join("blobs"))?;
    for d in &plan.blobs {
        if !target.contains(d) {
            let r = store.open_verified(d)?;
            let mut w = target.writer()?;
            let mut r = r;
            if let Err(e) = io::copy(&mut r, &mut w) {
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData => ArchiveError::Blob(r.take_error(e)),
                    _ => ArchiveError::Io {
                        op: "copying blob into",
                        path: dir.to_owned(),
                        source: e,
                    },
                });
            }
            w.commit(Some(*d))?;
        }
    }
    for (name, data) in &plan.files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        crate::atomic::atomic_write_shared(&p, data).map_err(io_err("writing", &p))?;
    }
    Ok(())
}

/// Reads an archive (a tar, possibly compressed, or an OCI layout folder) at
/// `path`, storing its blobs in `store`, verifying every digest.
pub fn read_archive(path: &Path, store: &BlobStore) -> Result<Vec<LoadedImage>, ArchiveError> {
    if path.is_dir() {
        return read_dir_layout(path, store);
    }
    let f = fs_err::File::open(path).map_err(io_err("opening", path))?;
    read_archive_from(f, store)
}

/// Like [`read_archive`] for a tar stream (`strata load` from stdin).
pub fn read_archive_from(
    r: impl Read,
    store: &BlobStore,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    let here = PathBuf::from("the archive");
    let (_, r) = compress::decompress(r).map_err(io_err("reading", &here))?;
    let mut ar = tar::Archive::new(r);
    let mut files = Files::default();
    let existing: BTreeSet<Digest> = store.list()?.into_iter().collect();
    for e in ar.entries().map_err(io_err("reading", &here))? {
        let mut e = e.map_err(io_err("reading", &here))?;
        let kind = e.header().entry_type();
        let raw = e.path().map_err(io_err("reading", &here))?.into_owned();
        let Some(name) =
            crate::path::clean_entry_name(&raw).and_then(|p| p.to_str().map(str::to_owned))
        else {
            continue;
        };
        if kind.is_symlink() || kind.is_hard_link() {
            // `docker save` links duplicate legacy layer files to one copy.
            if let Some(target) = e.link_name().ok().flatten() {
                let target = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(target)
                } else {
                    target.into_owned()
                };
                if let Some(t) = normalize(&target) {
                    files.aliases.insert(name, t);
                }
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        files.add(&name, &mut e, store)?;
    }
    let images = files.resolve(store)?;
    files.drop_unreferenced(store, &existing, &images)?;
    Ok(images)
}

fn read_dir_layout(dir: &Path, store: &BlobStore) -> Result<Vec<LoadedImage>, ArchiveError> {
    let mut files = Files::default();
    let existing: BTreeSet<Digest> = store.list()?.into_iter().collect();
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| ArchiveError::Io {
            op: "reading",
            path: dir.to_owned(),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk failed")),
        })?;
        if !e.file_type().is_file() {
            continue;
        }
        let Some(name) = e
            .path()
            .strip_prefix(dir)
            .ok()
            .and_then(Path::to_str)
            .map(str::to_owned)
        else {
            continue;
        };
        let mut f = fs_err::File::open(e.path()).map_err(io_err("opening", e.path()))?;
        files.add(&name, &mut f, store)?;
    }
    let images = files.resolve(store)?;
    files.drop_unreferenced(store, &existing, &images)?;
    Ok(images)
}

/// Lexically resolves `..` in an archive-internal link target; None if it
/// climbs out of the archive.
fn normalize(p: &Path) -> Option<String> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop()?;
            }
            _ => {}
        }
    }
    out.iter().collect::<PathBuf>().to_str().map(str::to_owned)
}

#[derive(Default)]
struct Files {
    /// Link entries: name -> the name they point to.
    aliases: HashMap<String, String>,
    /// Small metadata files by name.
    meta: HashMap<String, Vec<u8>>,
    /// Every other file: name -> (digest, size) of its content in the store.
    blobs: HashMap<String, (Digest, u64)>,
    added: BTreeSet<Digest>,
}

impl Files {
    fn add(&mut self, name: &str, r: &mut dyn Read, store: &BlobStore) -> Result<(), ArchiveError> {
        if matches!(
            name,
            "index.json" | "manifest.json" | "repositories" | "oci-layout"
        ) {
            let mut buf = Vec::new();
            r.take(MAX_JSON + 1)
                .read_to_end(&mut buf)
                .map_err(io_err("reading", name))?;
            if buf.len() as u64 > MAX_JSON {
                return Err(ArchiveError::TooLarge {
                    what: name.to_owned(),
                });
            }
            self.meta.insert(name.to_owned(), buf);
            return Ok(());
        }
        // Docker 20.10's per-layer metadata is not needed.
        if name.ends_with("/VERSION") || name.ends_with("/json") {
            return Ok(());
        }
        let expected = name
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok());
        let mut w = store.writer()?;
        io::copy(r, &mut w).map_err(io_err("reading", name))?;
        let (d, n) = match w.commit(expected) {
            Err(BlobError::Mismatch { expected, actual }) => {
                return Err(ArchiveError::Mismatch {
                    what: name.to_owned(),
                    expected,
                    actual,
                });
            }
            other => other?,
        };
        self.added.insert(d);
        self.blobs.insert(name.to_owned(), (d, n));
        Ok(())
    }

    /// The stored content of file `name`, following link entries.
    fn blob(&self, name: &str) -> Option<(Digest, u64)> {
        let mut name = name;
        for _ in 0..16 {
            if let Some(b) = self.blobs.get(name) {
                return Some(*b);
            }
            name = self.aliases.get(name)?;
        }
        None
    }

    fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ArchiveError> {
        self.meta
            .get(name)
            .map(|b| {
                serde_json::from_slice(b).map_err(|source| ArchiveError::Json {
                    what: name.to_owned(),
                    source,
                })
            })
            .transpose()
    }

    fn resolve(&self, store: &BlobStore) -> Result<Vec<LoadedImage>, ArchiveError> {
        if let Some(entries) = self.json::<Vec<DockerManifestEntry>>("manifest.json")? {
            return entries
                .iter()
                .map(|e| self.docker_image(e, store))
                .collect();
        }
        let Some(index) = self.json::<Index>("index.json")? else {
            return Err(ArchiveError::UnknownFormat);
        };
        let mut out: Vec<LoadedImage> = Vec::new();
        self.walk_index(&index, store, &mut out, 0)?;
        Ok(out)
    }

    fn walk_index(
        &self,
        index: &Index,
        store: &BlobStore,
        out: &mut Vec<LoadedImage>,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        if depth > 4 {
            return Err(ArchiveError::Missing {
                what: "a manifest (index nesting too deep)".into(),
            });
        }
        for d in &index.manifests {
            let data = self.verified_json(&d.digest, store, "manifest")?;
            if d.media_type == MEDIA_TYPE_OCI_INDEX || d.media_type == MEDIA_TYPE_DOCKER_LIST {
                let sub = Index::from_json(&data)?;
                self.walk_index(&sub, store, out, depth + 1)?;
                continue;
            }
            let manifest = Manifest::from_json(&data)?;
            let name = d
                .annotations
                .get(ANNOTATION_CONTAINERD_IMAGE_NAME)
                .or_else(|| d.annotations.get(ANNOTATION_REF_NAME))
                .cloned();
            if let Some(prev) = out.iter_mut().find(|i| i.manifest_digest == d.digest) {
                prev.names.extend(name);
                continue;
            }
            for l in std::iter::once(&manifest.config).chain(&manifest.layers) {
                if !store.contains(&l.digest) {
                    return Err(ArchiveError::Missing {
                        what: format!("blob {}", l.digest),
                    });
                }
            }
            let config = ImageConfig::from_json(&self.verified_json(
                &manifest.config.digest,
                store,
                "config",
            )?)?;
            out.push(LoadedImage {
                manifest,
                manifest_digest: d.digest,
                config,
                names: name.into_iter().collect(),
            });
        }
        Ok(())
    }

    fn verified_json(
        &self,
        d: &Digest,
        store: &BlobStore,
        what: &str,
    ) -> Result<Vec<u8>, ArchiveError> {
        if !store.contains(d) {
            return Err(ArchiveError::Missing {
                what: format!("{what} {d}"),
            });
        }
        if store.size(d)? > MAX_JSON {
            return Err(ArchiveError::TooLarge {
                what: format!("{what} {d}"),
            });
        }
        Ok(store.read_verified(d)?)
    }

    fn docker_image(
        &self,
        e: &DockerManifestEntry,
        store: &BlobStore,
    ) -> Result<LoadedImage, ArchiveError> {
        let missing = |p: &str| ArchiveError::Missing {
            what: format!("file {p:?}"),
        };
        let (cd, cn) = self.blob(&e.config).ok_or_else(|| missing(&e.config))?;
        let config = ImageConfig::from_json(&self.verified_json(&cd, store, "config")?)?;
        if config.rootfs.diff_ids.len() != e.layers.len() {
            return Err(ArchiveError::Missing {
                what: format!(
                    "{} layers (the config lists {})",
                    e.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            });
        }
        let mut layers = Vec::new();
        for (p, diff_id) in e.layers.iter().zip(&config.rootfs.diff_ids) {
            let (d, n) = self.blob(p).ok_or_else(|| missing(p))?;
            let (kind, actual) = diff_id_of(store, &d)?;
            if actual != *diff_id {
                return Err(ArchiveError::Mismatch {
                    what: format!("layer {p:?}"),
                    expected: *diff_id,
                    actual,
                });
            }
            let c = match kind {
                Detected::Gzip => Compression::default(),
                Detected::Zstd => Compression::Zstd {
                    level: crate::compress::DEFAULT_ZSTD_LEVEL,
                },
                _ => Compression::Uncompressed,
            };
            layers.push(Descriptor::new(c.oci_layer_media_type(), d, n));
        }
        let manifest = Manifest::oci(Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cd, cn), layers);
        let (manifest_digest, _) = store.put_bytes(&manifest.to_json())?;
        let names = e.repo_tags.clone().unwrap_or_default();
        Ok(LoadedImage {
            manifest,
            manifest_digest,
            config,
            names,
        })
    }

    /// Removes blobs this read added that no image refers to (docker-archive
    /// files that turned out not to be layers or configs).
    fn drop_unreferenced(
        &self,
        store: &BlobStore,
        existing: &BTreeSet<Digest>,
        images: &[LoadedImage],
    ) -> Result<(), ArchiveError> {
        let mut used: BTreeSet<Digest> = BTreeSet::new();
        for i in images {
            used.insert(i.manifest_digest);
            used.insert(i.manifest.config.digest);
            used.extend(i.manifest.layers.iter().map(|l| l.digest));
        }
        for d in &self.added {
            if !used.contains(d) && !existing.contains(d) {
                store.delete(d)?;
            }
        }
        Ok(())
    }
}

/// The diffID (digest of the uncompressed tar) of a stored layer blob.
pub fn diff_id_of(store: &BlobStore, d: &Digest) -> Result<(Detected, Digest), ArchiveError> {
    let here = store.path(d);
    let r = store.open_verified(d)?;
    let (kind, dec) = compress::decompress(r).map_err(io_err("reading", &here))?;
    let mut h = DigestingReader::new(dec);
    io::copy(&mut h, &mut io::sink()).map_err(io_err("decompressing", &here))?;
    Ok((kind, h.finish().1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ImageConfig, MEDIA_TYPE_OCI_CONFIG};

    /// A one-layer image for `arch` in `store`.
    fn image(store: &BlobStore, arch: &str) -> (Manifest, Platform) {
        let layer = format!("layer for {arch}");
        let (ld, ln) = store.put_bytes(layer.as_bytes()).unwrap();
        let mut config = ImageConfig::new("linux", arch);
        config.rootfs.diff_ids.push(ld);
        let cj = config.to_json();
        let (cd, cn) = store.put_bytes(&cj).unwrap();
        let m = Manifest::oci(
            Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cd, cn),
            vec![Descriptor::new(
                Compression::Uncompressed.oci_layer_media_type(),
                ld,
                ln,
            )],
        );
        let p = Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            variant: None,
        };
        (m, p)
    }

    #[test]
    fn index_archive_lists_one_manifest_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let index = ArchiveIndex {
            manifests: vec![image(&store, "amd64"), image(&store, "arm64")],
            names: vec!["example.com/app:1".into()],
        };
        let mut tar_bytes = Vec::new();
        write_index_archive(&mut tar_bytes, &store, &index).unwrap();
        let layout = dir.path().join("layout");
        write_oci_index_dir(&layout, &store, &index).unwrap();

        // index.json names one index, under the image's name.
        let top: oci_spec::image::ImageIndex =
            serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(top.manifests().len(), 1);
        let entry = &top.manifests()[0];
        assert_eq!(entry.media_type().to_string(), MEDIA_TYPE_OCI_INDEX);
        let ann = entry.annotations().clone().unwrap_or_default();
        assert_eq!(ann.get(ANNOTATION_REF_NAME).map(String::as_str), Some("1"));
        // The nested index has a manifest per platform, each with its platform.
        let hex = entry.digest().digest().to_owned();
        let nested: oci_spec::image::ImageIndex =
            serde_json::from_slice(&fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        let archs: Vec<String> = nested
            .manifests()
            .iter()
            .map(|m| m.platform().as_ref().unwrap().architecture().to_string())
            .collect();
        assert_eq!(archs, ["amd64", "arm64"]);

        // The tar holds the same files, and our reader loads both images.
        let back = BlobStore::open(dir.path().join("back")).unwrap();
        let loaded = read_archive_from(&tar_bytes[..], &back).unwrap();
        let mut loaded_archs: Vec<String> = loaded
            .iter()
            .map(|i| i.config.architecture.clone())
            .collect();
        loaded_archs.sort();
        assert_eq!(loaded_archs, ["amd64", "arm64"]);
        let from_dir =
            read_archive(&layout, &BlobStore::open(dir.path().join("b2")).unwrap()).unwrap();
        assert_eq!(from_dir.len(), 2);
    }
}
