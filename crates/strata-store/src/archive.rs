//! `save` and `load`: image archives that are at once a docker-archive
//! (`manifest.json`) and an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), as Docker 25+ writes them. Blobs are content-addressed,
//! so layers shared by several images are stored once.
//!
//! Loading never extracts outside a private temporary directory: entry paths
//! are cleaned (no `..`, no absolute paths) and symlinks (old docker-archives
//! use them for repeated layers) are resolved by name inside the archive.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};
use strata_oci::Digest;

use crate::image::{manifest_json, put_layer};
use crate::{
    ImageRecord, LayerRecord, Result, Store, StoreError, WriteLock, familiar, io_err,
    normalize_reference,
};

/// An image `load` stored, with the tags it set.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    pub tags: Vec<String>,
}

/// Writes `images` (each with the normalised tags to record for it) as one
/// archive. Each blob is written once however many images share it.
pub fn save_archive(
    store: &Store,
    images: &[(ImageRecord, Vec<String>)],
    out: impl Write,
) -> Result<()> {
    let werr = |e: std::io::Error| StoreError::Io {
        path: PathBuf::from("<archive>"),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    let mut written: BTreeSet<Digest> = BTreeSet::new();
    let mut add = |b: &mut tar::Builder<_>, d: &Digest| -> Result<()> {
        if !written.insert(*d) {
            return Ok(());
        }
        let mut f = store.open_blob(d)?;
        let len = f.metadata().map_err(io_err(store.blob_path(d)))?.len();
        let mut h = tar::Header::new_gnu();
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
            .map_err(werr)
    };
    let mut manifest = Vec::new();
    let mut index = Vec::new();
    for (img, tags) in images {
        add(&mut b, &img.id)?;
        for l in &img.layers {
            add(&mut b, &l.blob)?;
        }
        add(&mut b, &img.manifest)?;
        manifest.push(json!({
            "Config": format!("blobs/sha256/{}", img.id.hex()),
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags.iter().map(|t| familiar(t)).collect::<Vec<_>>()) },
            "Layers": img.layers.iter().map(|l| format!("blobs/sha256/{}", l.blob.hex())).collect::<Vec<_>>(),
        }));
        let desc = |ann: Value| json!({"mediaType": crate::MEDIA_MANIFEST, "digest": img.manifest.to_string(), "size": img.manifest_size, "annotations": ann});
        if tags.is_empty() {
            index.push(desc(json!({})));
        }
        for t in tags {
            let tag = t.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            index.push(desc(
                json!({"io.containerd.image.name": t, "org.opencontainers.image.ref.name": tag}),
            ));
        }
    }
    let put = |b: &mut tar::Builder<_>, name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).map_err(werr)
    };
    let ser =
        |v: &Value| serde_json::to_vec(v).map_err(|e| StoreError::InvalidImage(e.to_string()));
    put(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    put(
        &mut b,
        "index.json",
        &ser(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index}),
        )?,
    )?;
    put(&mut b, "manifest.json", &ser(&json!(manifest))?)?;
    b.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}

fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Prefix(_) => return None,
        }
    }
    if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    }
}

struct Unpacked {
    dir: tempfile::TempDir,
    links: BTreeMap<PathBuf, PathBuf>,
    name: PathBuf,
}

impl Unpacked {
    /// The file for an archive path, following archive-internal symlinks.
    fn file(&self, p: &str) -> Result<PathBuf> {
        let mut cur = clean(Path::new(p)).ok_or_else(|| self.err(format!("bad path {p}")))?;
        for _ in 0..16 {
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => {
                    let f = self.dir.path().join(&cur);
                    return if f.is_file() {
                        Ok(f)
                    } else {
                        Err(self.err(format!("{p} is not in the archive")))
                    };
                }
            }
        }
        Err(self.err(format!("{p}: too many symlinks")))
    }

    fn json(&self, p: &str) -> Result<Value> {
        let f = self.file(p)?;
        let data = fs_err::read(&f).map_err(io_err(&f))?;
        serde_json::from_slice(&data).map_err(|e| self.err(format!("{p}: {e}")))
    }

    fn err(&self, message: String) -> StoreError {
        StoreError::Archive {
            path: self.name.clone(),
            message,
        }
    }
}

fn unpack(store: &Store, name: &Path, input: impl Read) -> Result<Unpacked> {
    let tmp = store.root().join("tmp");
    let dir = tempfile::Builder::new()
        .prefix("load-")
        .tempdir_in(&tmp)
        .map_err(io_err(&tmp))?;
    let mut links = BTreeMap::new();
    let aerr = |m: String| StoreError::Archive {
        path: name.to_path_buf(),
        message: m,
    };
    let mut ar = tar::Archive::new(input);
    for e in ar.entries().map_err(|e| aerr(e.to_string()))? {
        let mut e = e.map_err(|e| aerr(e.to_string()))?;
        let raw = e.path().map_err(|e| aerr(e.to_string()))?.into_owned();
        let Some(p) = clean(&raw) else { continue };
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dest = dir.path().join(&p);
                if let Some(parent) = dest.parent() {
                    fs_err::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let mut f = fs_err::File::create(&dest).map_err(io_err(&dest))?;
                std::io::copy(&mut e, &mut f).map_err(io_err(&dest))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let Some(target) = e.link_name().map_err(|e| aerr(e.to_string()))? else {
                    continue;
                };
                let base = if e.header().entry_type() == tar::EntryType::Symlink {
                    p.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    PathBuf::new()
                };
                if let Some(t) = clean(&base.join(target)) {
                    links.insert(p, t);
                }
            }
            _ => {}
        }
    }
    Ok(Unpacked {
        dir,
        links,
        name: name.to_path_buf(),
    })
}

/// Loads every image of a docker-archive or OCI layout tar. Blobs are stored
/// first and each image is recorded in one transaction afterwards.
pub fn load_archive(
    store: &Store,
    lock: &WriteLock,
    name: &Path,
    input: impl Read,
) -> Result<Vec<LoadedImage>> {
    let u = unpack(store, name, input)?;
    let mut out = Vec::new();
    if u.file("manifest.json").is_ok() {
        let m = u.json("manifest.json")?;
        for entry in m
            .as_array()
            .ok_or_else(|| u.err("manifest.json is not a list".into()))?
        {
            let cfg_path = entry["Config"]
                .as_str()
                .ok_or_else(|| u.err("manifest.json: entry without Config".into()))?;
            let layer_paths: Vec<&str> = entry["Layers"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let tags: Vec<String> = entry["RepoTags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            out.push(load_one(store, lock, &u, cfg_path, &layer_paths, &tags)?);
        }
    } else if u.file("index.json").is_ok() {
        let idx = u.json("index.json")?;
        for desc in idx["manifests"]
            .as_array()
            .ok_or_else(|| u.err("index.json has no manifests".into()))?
        {
            let digest = desc["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| u.err("index.json: bad digest".into()))?;
            let mut man = u.json(&format!("blobs/sha256/{}", digest.hex()))?;
            if man.get("manifests").is_some() {
                // A nested index: take this platform's manifest, else the first.
                let list = man["manifests"].as_array().cloned().unwrap_or_default();
                let pick = list
                    .iter()
                    .find(|d| d["platform"]["architecture"] == crate::host_arch())
                    .or(list.first())
                    .and_then(|d| d["digest"].as_str())
                    .and_then(|d| d.parse::<Digest>().ok())
                    .ok_or_else(|| u.err("empty nested index".into()))?;
                man = u.json(&format!("blobs/sha256/{}", pick.hex()))?;
            }
            let cfg = man["config"]["digest"]
                .as_str()
                .and_then(|d| d.parse::<Digest>().ok())
                .ok_or_else(|| u.err("manifest without config".into()))?;
            let layers: Vec<String> = man["layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l["digest"].as_str()?.parse::<Digest>().ok())
                        .map(|d| format!("blobs/sha256/{}", d.hex()))
                        .collect()
                })
                .unwrap_or_default();
            let name = desc["annotations"]["io.containerd.image.name"]
                .as_str()
                .map(str::to_owned);
            let tags: Vec<String> = name.into_iter().collect();
            let lp: Vec<&str> = layers.iter().map(String::as_str).collect();
            out.push(load_one(
                store,
                lock,
                &u,
                &format!("blobs/sha256/{}", cfg.hex()),
                &lp,
                &tags,
            )?);
        }
    } else {
        return Err(u.err("neither manifest.json nor index.json: not an image archive".into()));
    }
    Ok(out)
}

fn load_one(
    store: &Store,
    lock: &WriteLock,
    u: &Unpacked,
    cfg_path: &str,
    layer_paths: &[&str],
    tags: &[String],
) -> Result<LoadedImage> {
    let cfg_file = u.file(cfg_path)?;
    let cfg_bytes = fs_err::read(&cfg_file).map_err(io_err(&cfg_file))?;
    let config: Value =
        serde_json::from_slice(&cfg_bytes).map_err(|e| u.err(format!("{cfg_path}: {e}")))?;
    let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    if diff_ids.len() != layer_paths.len() {
        return Err(u.err(format!(
            "{cfg_path}: {} diff_ids for {} layers",
            diff_ids.len(),
            layer_paths.len()
        )));
    }
    let mut layers: Vec<LayerRecord> = Vec::new();
    for (p, want) in layer_paths.iter().zip(&diff_ids) {
        let f = u.file(p)?;
        let l = put_layer(store, lock, fs_err::File::open(&f).map_err(io_err(&f))?)?;
        if l.diff_id != *want {
            return Err(u.err(format!(
                "layer {p}: content has diffID {} but the config says {want}",
                l.diff_id
            )));
        }
        if let Some(expect) = p
            .strip_prefix("blobs/sha256/")
            .and_then(|h| Digest::from_hex(h).ok())
            && expect != l.blob
        {
            return Err(u.err(format!("blob {p} has digest {}", l.blob)));
        }
        layers.push(l);
    }
    let id = store.put_blob_bytes(lock, &cfg_bytes)?;
    let man = serde_json::to_vec(&manifest_json(&id, cfg_bytes.len() as u64, &layers))
        .map_err(|e| StoreError::InvalidImage(e.to_string()))?;
    let manifest = store.put_blob_bytes(lock, &man)?;
    let created = config["created"]
        .as_str()
        .and_then(crate::parse_rfc3339)
        .unwrap_or(0);
    let img = ImageRecord {
        repo_digests: Vec::new(),
        id,
        manifest,
        manifest_size: man.len() as u64,
        config_size: cfg_bytes.len() as u64,
        layers,
        created,
        parent: None,
    };
    let norm: Vec<String> = tags
        .iter()
        .map(|t| normalize_reference(t))
        .collect::<Result<_>>()?;
    store.commit_image(lock, &img, &norm)?;
    Ok(LoadedImage { id, tags: norm })
}
