//! The shared build cache: `--cache-to` / `--cache-from`, in a registry or an
//! OCI layout folder.
//!
//! Format: one OCI image manifest (`artifactType`
//! `application/vnd.strata.cache.v1`) whose config blob
//! (`application/vnd.strata.cache.config.v1+json`) maps cache keys to the
//! cached step (its layer record and resulting image config), and whose
//! `layers` list every layer blob those steps use, so that a registry keeps
//! them and a copy tool (skopeo, crane) moves them along. Keys are the
//! solver's content-addressed step keys, identical on every machine for the
//! same base image, context and instructions.
//!
//! Importing reads only the manifest and the config; a layer is fetched the
//! first time a step with its key is reached, so a machine pulls the layers
//! of steps that match and nothing else.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;
use strata_oci::image::{Descriptor, MEDIA_TYPE_OCI_MANIFEST};
use strata_oci::reference::Reference;
use strata_registry::{Client, Repository};
use strata_store::{KeyKind, Lease, Store};

pub use super::spec::{CacheExport, CacheLocation, parse_cache_from, parse_cache_to};
use crate::error::{Result, context, other};

pub const ARTIFACT_TYPE: &str = "application/vnd.strata.cache.v1";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.strata.cache.config.v1+json";

/// The config blob of a cache manifest.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheConfig {
    version: u32,
    /// Cache key -> the solver's cached step (opaque here).
    records: BTreeMap<String, serde_json::Value>,
}

/// Caches read from `--cache-from` sources.
#[derive(Debug, Default)]
pub struct ImportedCache {
    records: HashMap<String, (serde_json::Value, usize)>,
    blobs: HashMap<Digest, (Descriptor, usize)>,
    sources: Vec<CacheLocation>,
    /// Layer blobs fetched from the sources (for the build summary).
    pub fetched: usize,
}

impl ImportedCache {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Reads every source's manifest and config. A source that does not
    /// exist yet is not an error (the first build of a branch has none):
    /// it is returned as a warning.
    pub fn load(
        client: Option<&Client>,
        sources: &[CacheLocation],
    ) -> Result<(ImportedCache, Vec<String>)> {
        let mut out = ImportedCache::default();
        let mut warnings = Vec::new();
        for src in sources {
            let i = out.sources.len();
            out.sources.push(src.clone());
            let loaded = match src {
                CacheLocation::Registry(r) => {
                    let client = client
                        .ok_or_else(|| other("--cache-from type=registry needs registry access"))?;
                    load_registry(client, r)
                }
                CacheLocation::Local(d) => load_local(d),
            };
            match loaded {
                Ok((config, layers)) => {
                    for (k, v) in config.records {
                        out.records.entry(k).or_insert((v, i));
                    }
                    for l in layers {
                        out.blobs.entry(l.digest).or_insert((l, i));
                    }
                }
                Err(e) => warnings.push(format!("cache from {}: {e}", describe(src))),
            }
        }
        Ok((out, warnings))
    }

    /// The cached step for `key`, if a source has it.
    pub fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.records.get(key).map(|(v, _)| v)
    }

    /// Makes sure blob `digest` is in the store, fetching it from the source
    /// that listed it (verified, like any pull).
    pub fn fetch_blob(
        &mut self,
        store: &Store,
        lease: &Lease,
        client: Option<&Client>,
        digest: &Digest,
    ) -> Result<()> {
        // Leased before looking, fetched once across processes.
        lease.add(&store.lock()?, [*digest])?;
        let _fetching = store.key_lock(KeyKind::Blob, digest)?;
        if store.has_blob(digest) {
            return Ok(());
        }
        let (desc, i) = self
            .blobs
            .get(digest)
            .cloned()
            .ok_or_else(|| other(format!("cache lists no blob {digest}")))?;
        let downloads = store.downloads_dir();
        fs_err::create_dir_all(&downloads).map_err(crate::error::io("creating downloads dir"))?;
        let partial = downloads.join(format!("{}.partial", digest.hex()));
        match &self.sources[i] {
            CacheLocation::Registry(r) => {
                let client =
                    client.ok_or_else(|| other("--cache-from type=registry needs a client"))?;
                client.fetch_blob(&Repository::of(r), &desc, &partial, &mut |_| {})?;
            }
            CacheLocation::Local(dir) => {
                let src = dir.join("blobs/sha256").join(digest.hex());
                let mut f =
                    fs_err::File::open(&src).map_err(crate::error::io("reading local cache"))?;
                let mut w = strata_oci::DigestingWriter::new(
                    fs_err::File::create(&partial)
                        .map_err(crate::error::io("writing a download"))?,
                );
                std::io::copy(&mut f, &mut w)
                    .map_err(crate::error::io("copying from local cache"))?;
                let (_, got, _) = w.finish();
                if got != *digest {
                    let _ = std::fs::remove_file(&partial);
                    return Err(other(format!(
                        "local cache {}: blob {digest} does not match its digest (got {got}); refused",
                        dir.display()
                    )));
                }
            }
        }
        store.adopt_blob(&store.lock()?, &partial, digest)?;
        self.fetched += 1;
        Ok(())
    }
}

fn describe(l: &CacheLocation) -> String {
    match l {
        CacheLocation::Registry(r) => r.to_string(),
        CacheLocation::Local(d) => d.display().to_string(),
    }
}

fn parse_manifest(bytes: &[u8], what: &str) -> Result<(Descriptor, Vec<Descriptor>)> {
    let m = strata_oci::image::Manifest::from_json(bytes).map_err(context(what))?;
    if m.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(other(format!(
            "{what} is not a strata build cache (config type {:?})",
            m.config.media_type
        )));
    }
    Ok((m.config, m.layers))
}

fn parse_config(bytes: &[u8], what: &str) -> Result<CacheConfig> {
    let c: CacheConfig = serde_json::from_slice(bytes).map_err(context(what))?;
    if c.version != 1 {
        return Err(other(format!(
            "{what}: cache format version {} is not supported",
            c.version
        )));
    }
    Ok(c)
}

fn load_registry(client: &Client, r: &Reference) -> Result<(CacheConfig, Vec<Descriptor>)> {
    let repo = Repository::of(r);
    let m = client.get_manifest(&repo, &r.manifest_selector())?;
    let (config, layers) = parse_manifest(&m.bytes, &r.to_string())?;
    let bytes = client.get_blob_bytes(&repo, &config.digest, 64 << 20)?;
    Ok((parse_config(&bytes, &r.to_string())?, layers))
}

fn load_local(dir: &Path) -> Result<(CacheConfig, Vec<Descriptor>)> {
    let what = dir.display().to_string();
    let index =
        fs_err::read(dir.join("index.json")).map_err(crate::error::io("reading local cache"))?;
    let index = strata_oci::image::Index::from_json(&index).map_err(context(what.clone()))?;
    let desc = index
        .manifests
        .first()
        .ok_or_else(|| other(format!("{what}: index.json lists no cache manifest")))?;
    let read = |d: &Digest| -> Result<Vec<u8>> {
        let p = dir.join("blobs/sha256").join(d.hex());
        let b = fs_err::read(&p).map_err(crate::error::io("reading local cache"))?;
        if Digest::of(&b) != *d {
            return Err(other(format!(
                "{}: does not match its digest; refused",
                p.display()
            )));
        }
        Ok(b)
    };
    let (config, layers) = parse_manifest(&read(&desc.digest)?, &what)?;
    Ok((parse_config(&read(&config.digest)?, &what)?, layers))
}

/// Writes the cache for `records` (key -> cached step, with the layer blobs
/// each needs) to `dest`. Returns the cache manifest's digest.
pub fn export(
    store: &Store,
    client: Option<&Client>,
    records: &[(String, serde_json::Value, Vec<Descriptor>)],
    dest: &CacheLocation,
) -> Result<Digest> {
    let mut config = CacheConfig {
        version: 1,
        records: BTreeMap::new(),
    };
    let mut layers: BTreeMap<Digest, Descriptor> = BTreeMap::new();
    for (k, v, ls) in records {
        config.records.insert(k.clone(), v.clone());
        for l in ls {
            layers.insert(l.digest, l.clone());
        }
    }
    let config_bytes = strata_oci::image::canonical_json(&config);
    let config_desc = Descriptor::new(
        CONFIG_MEDIA_TYPE,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    let layers: Vec<Descriptor> = layers.into_values().collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": config_desc,
        "layers": layers,
    });
    let manifest_bytes = strata_oci::image::canonical_json(&manifest);
    let digest = Digest::of(&manifest_bytes);
    match dest {
        CacheLocation::Registry(r) => {
            let client = client.ok_or_else(|| other("--cache-to type=registry needs a client"))?;
            let repo = Repository::of(r);
            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
            for l in &layers {
                let path = store.blob_path(&l.digest);
                let open = || std::fs::File::open(&path);
                let sibling = store
                    .blob_sources(&l.digest)
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|s| {
                        s.strip_prefix(&format!("{}/", r.registry))
                            .map(str::to_owned)
                    })
                    .find(|s| *s != repo.name);
                client.push_blob(&repo, l, sibling.as_deref(), &open)?;
                store.add_blob_source(&store.lock()?, &l.digest, &repo.to_string())?;
            }
            let tmp = store.scratch_dir("cache-push")?;
            let p = tmp.path().join("config.json");
            fs_err::write(&p, &config_bytes)
                .map_err(crate::error::io("writing the cache config"))?;
            client.push_blob(&repo, &config_desc, None, &|| std::fs::File::open(&p))?;
            client.put_manifest(&repo, &tag, MEDIA_TYPE_OCI_MANIFEST, &manifest_bytes)?;
        }
        CacheLocation::Local(dir) => {
            let blobs = dir.join("blobs/sha256");
            fs_err::create_dir_all(&blobs).map_err(crate::error::io("creating the local cache"))?;
            for l in &layers {
                let dst = blobs.join(l.digest.hex());
                if !dst.exists() {
                    let mut src = store.open_blob(&l.digest)?;
                    let mut f = strata_oci::AtomicFile::create_shared(&dst)
                        .map_err(context(dst.display().to_string()))?;
                    std::io::copy(&mut src, f.file())
                        .map_err(crate::error::io("writing the local cache"))?;
                    f.commit().map_err(context(dst.display().to_string()))?;
                }
            }
            for (d, b) in [
                (config_desc.digest, &config_bytes),
                (digest, &manifest_bytes),
            ] {
                strata_oci::atomic_write_shared(blobs.join(d.hex()), b)
                    .map_err(context("writing the local cache"))?;
            }
            strata_oci::atomic_write_shared(
                dir.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )
            .map_err(context("writing the local cache"))?;
            let mut desc =
                Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, digest, manifest_bytes.len() as u64);
            desc.annotations.insert(
                strata_oci::image::ANNOTATION_REF_NAME.to_owned(),
                "latest".to_owned(),
            );
            let index = strata_oci::image::Index::new(vec![desc]);
            // index.json last: a reader never sees a manifest whose blobs
            // are not all written.
            strata_oci::atomic_write_shared(dir.join("index.json"), &index.to_json())
                .map_err(context("writing the local cache"))?;
        }
    }
    Ok(digest)
}
