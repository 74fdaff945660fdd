//! Reading archives: every file is streamed into the blob store while it is
//! hashed (small JSON files are kept in memory), then the images are
//! resolved from `manifest.json` or `index.json` and every digest checked.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::types::{ArchiveError, DockerManifestEntry, LoadedImage, LoadedLayer, MAX_JSON, io_err};
use crate::blobs::{BlobError, BlobStore};
use crate::compress::{self, Compression, Detected};
use crate::digest::{Digest, DigestingReader};
use crate::image::{
    ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, ImageConfig, Index,
    MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, Manifest, Platform,
};
use crate::io_error::IoError;

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
    read_tar(r, store, None)
}

/// Like [`read_archive_from`], but an image index inside the archive
/// yields one image: its manifest for `platform` as containerd's
/// `platforms.Only` picks it, else its first (`docker load` of a
/// multi-platform archive), carrying the names the index is listed under.
pub fn read_archive_for_platform(
    r: impl Read,
    store: &BlobStore,
    platform: &Platform,
) -> Result<Vec<LoadedImage>, ArchiveError> {
    read_tar(r, store, Some(platform))
}

fn read_tar(
    r: impl Read,
    store: &BlobStore,
    platform: Option<&Platform>,
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
                let resolved = if kind.is_symlink() {
                    Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(&target)
                } else {
                    target.to_path_buf()
                };
                match normalize(&resolved) {
                    Some(t) => files.aliases.insert(name, Ok(t)),
                    None => files
                        .aliases
                        .insert(name, Err(target.to_string_lossy().into_owned())),
                };
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        files.add(&name, &mut e, store)?;
    }
    files.finish(store, &existing, platform)
}

fn read_dir_layout(dir: &Path, store: &BlobStore) -> Result<Vec<LoadedImage>, ArchiveError> {
    let mut files = Files::default();
    let existing: BTreeSet<Digest> = store.list()?.into_iter().collect();
    for e in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| {
            ArchiveError::Io(IoError::at("reading", dir)(
                e.into_io_error()
                    .unwrap_or_else(|| io::Error::other("walk failed")),
            ))
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
    files.finish(store, &existing, None)
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
    /// Link entries: name -> the name they point to, or (Err) the target
    /// as written when it points outside the archive.
    aliases: HashMap<String, Result<String, String>>,
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
        io::copy(r, &mut w).map_err(|e| {
            // A full disk is the store's, not the archive's fault: say so
            // (the error names the blob file being written).
            let op = if e.kind() == io::ErrorKind::StorageFull {
                "storing"
            } else {
                "reading"
            };
            ArchiveError::Io(IoError::at(op, name)(e))
        })?;
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

    /// The stored content of file `name`, following link entries; None if
    /// the archive has no such file.
    fn blob(&self, name: &str) -> Result<Option<(Digest, u64)>, ArchiveError> {
        let mut cur = name;
        for _ in 0..16 {
            if let Some(b) = self.blobs.get(cur) {
                return Ok(Some(*b));
            }
            match self.aliases.get(cur) {
                None => return Ok(None),
                Some(Ok(next)) => cur = next,
                Some(Err(target)) => {
                    return Err(ArchiveError::LinkOutside {
                        name: cur.to_owned(),
                        target: target.clone(),
                    });
                }
            }
        }
        Ok(None)
    }

    /// The images, checked; then the blobs this read stored that none of
    /// them uses are removed again.
    fn finish(
        &self,
        store: &BlobStore,
        existing: &BTreeSet<Digest>,
        platform: Option<&Platform>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        let images = self.resolve(store, platform);
        let keep: &[LoadedImage] = match &images {
            Ok(images) => images,
            Err(_) => &[],
        };
        self.drop_unreferenced(store, existing, keep)?;
        images
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

    fn resolve(
        &self,
        store: &BlobStore,
        platform: Option<&Platform>,
    ) -> Result<Vec<LoadedImage>, ArchiveError> {
        if let Some(entries) = self.json::<Vec<DockerManifestEntry>>("manifest.json")? {
            if entries.is_empty() {
                return Err(ArchiveError::NoImages("manifest.json"));
            }
            return entries
                .iter()
                .map(|e| self.docker_image(e, store))
                .collect();
        }
        let Some(index) = self.json::<Index>("index.json")? else {
            return Err(ArchiveError::UnknownFormat);
        };
        let mut out: Vec<LoadedImage> = Vec::new();
        self.walk_index(&index, store, platform, None, &mut out, 0)?;
        if out.is_empty() {
            return Err(ArchiveError::NoImages("index.json"));
        }
        Ok(out)
    }

    /// Loads the manifests `index` lists; `name` is the name the index
    /// itself is listed under, for entries that carry none.
    fn walk_index(
        &self,
        index: &Index,
        store: &BlobStore,
        platform: Option<&Platform>,
        name: Option<&str>,
        out: &mut Vec<LoadedImage>,
        depth: usize,
    ) -> Result<(), ArchiveError> {
        if depth > 4 {
            return Err(ArchiveError::Missing {
                what: "a manifest (index nesting too deep)".into(),
            });
        }
        let mut entries: Vec<&Descriptor> = index.manifests.iter().collect();
        if depth > 0
            && let Some(want) = platform
        {
            let pick = want
                .pick(
                    entries
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(|p| (p, *d))),
                )
                .or(entries.first().copied());
            entries = pick.into_iter().collect();
        }
        for d in entries {
            let data = self.verified_json(&d.digest, store, "manifest")?;
            // `org.opencontainers.image.ref.name` is often a bare tag
            // (`latest`), which names no repository: only a full
            // reference in it is taken.
            let name = d
                .annotations
                .get(ANNOTATION_CONTAINERD_IMAGE_NAME)
                .or_else(|| {
                    d.annotations
                        .get(ANNOTATION_REF_NAME)
                        .filter(|r| r.contains(['/', ':', '@']))
                })
                .map(String::as_str)
                .or(name);
            if d.media_type == MEDIA_TYPE_OCI_INDEX || d.media_type == MEDIA_TYPE_DOCKER_LIST {
                let sub = Index::from_json(&data)?;
                self.walk_index(&sub, store, platform, name, out, depth + 1)?;
                continue;
            }
            let name = name.map(str::to_owned);
            if let Some(prev) = out.iter_mut().find(|i| i.manifest_digest == d.digest) {
                prev.names.extend(name);
                continue;
            }
            let manifest = Manifest::from_json(&data)?;
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
            let layers = check_layers(
                store,
                manifest
                    .layers
                    .iter()
                    .map(|l| (format!("{}", l.digest), l.digest)),
                &config,
            )?;
            out.push(LoadedImage {
                manifest,
                manifest_digest: d.digest,
                config,
                layers,
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
        let (cd, cn) = self.blob(&e.config)?.ok_or_else(|| missing(&e.config))?;
        let config = ImageConfig::from_json(&self.verified_json(&cd, store, "config")?)?;
        let mut stored = Vec::new();
        for p in &e.layers {
            let (d, n) = self.blob(p)?.ok_or_else(|| missing(p))?;
            stored.push((format!("{p:?}"), d, n));
        }
        let loaded = check_layers(
            store,
            stored.iter().map(|(what, d, _)| (what.clone(), *d)),
            &config,
        )?;
        let mut layers = Vec::new();
        for ((what, d, n), l) in stored.iter().zip(&loaded) {
            let c = match l.compression {
                Detected::Gzip => Compression::default(),
                Detected::Zstd => Compression::Zstd {
                    level: crate::compress::DEFAULT_ZSTD_LEVEL,
                },
                Detected::Plain => Compression::Uncompressed,
                Detected::Bzip2 => return Err(compression_err(what, "bzip2")),
                Detected::Xz => return Err(compression_err(what, "xz")),
            };
            layers.push(Descriptor::new(c.oci_layer_media_type(), *d, *n));
        }
        let manifest = Manifest::oci(Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cd, cn), layers);
        let (manifest_digest, _) = store.put_bytes(&manifest.to_json())?;
        let names = e.repo_tags.clone().unwrap_or_default();
        Ok(LoadedImage {
            manifest,
            manifest_digest,
            config,
            layers: loaded,
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

fn compression_err(what: &str, kind: &'static str) -> ArchiveError {
    ArchiveError::LayerCompression {
        what: what.to_owned(),
        kind,
    }
}

/// Reads every layer through once: its diffID must be the config's, and
/// each entry one the applier accepts. `layers` are (how to name it, blob).
fn check_layers(
    store: &BlobStore,
    layers: impl ExactSizeIterator<Item = (String, Digest)>,
    config: &ImageConfig,
) -> Result<Vec<LoadedLayer>, ArchiveError> {
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(ArchiveError::Missing {
            what: format!(
                "{} layers (the config lists {})",
                layers.len(),
                config.rootfs.diff_ids.len()
            ),
        });
    }
    let mut out = Vec::new();
    for ((what, d), diff_id) in layers.zip(&config.rootfs.diff_ids) {
        let layer = inspect_layer(store, &d, &what)?;
        if layer.diff_id != *diff_id {
            return Err(ArchiveError::Mismatch {
                what: format!("layer {what}"),
                expected: *diff_id,
                actual: layer.diff_id,
            });
        }
        out.push(layer);
    }
    Ok(out)
}

/// Decompresses a stored layer blob once: its diffID and size, with every
/// entry checked on the way (see [`crate::layer_check`]).
fn inspect_layer(store: &BlobStore, d: &Digest, what: &str) -> Result<LoadedLayer, ArchiveError> {
    let here = store.path(d);
    let r = store.open_verified(d)?;
    let (compression, dec) = compress::decompress(r).map_err(io_err("reading", &here))?;
    let mut h = DigestingReader::new(dec);
    crate::layer_check::check_layer_entries(&mut h).map_err(|source| ArchiveError::BadLayer {
        what: what.to_owned(),
        source,
    })?;
    // What follows the end-of-archive blocks is part of the diffID too.
    io::copy(&mut h, &mut io::sink()).map_err(io_err("decompressing", &here))?;
    let (_, diff_id, uncompressed_size) = h.finish();
    Ok(LoadedLayer {
        compression,
        diff_id,
        uncompressed_size,
    })
}
