//! Images between the store and registries: `pull` (resolve to a platform,
//! fetch missing layers in parallel, verify, record) and `push` (blobs that
//! the registry lacks, mounted from a sibling repository when we know one,
//! then the manifest under its tag).
//!
//! The network client is `strata_registry`; this module owns the store side:
//! downloads land in `downloads/` (kept across runs, so an interrupted pull
//! resumes), are adopted into the blob store once verified, and the image is
//! recorded only after every blob is in place.
//!
//! Neither holds the store lock across network I/O: a pull leases each
//! blob before fetching it and downloads it under the blob's key lock (so
//! two processes pulling the same base fetch it once), and takes the store
//! lock only to adopt a blob and to record the image; a push reads blobs
//! its caller's lease holds.

use std::sync::Mutex;

use strata_oci::Digest;
use strata_oci::image::{Descriptor, ImageConfig, Platform};
use strata_oci::reference::Reference;
use strata_registry::{BlobPush, Client, Repository};
use strata_store::{ImageRecord, KeyKind, LayerRecord, Lease, Store};

use crate::{ImageError, Result};

/// Layers fetched or sent at once (Docker's defaults are 3 down, 5 up).
const PARALLEL_DOWNLOADS: usize = 3;
const PARALLEL_UPLOADS: usize = 5;

/// Progress of a pull or push, per layer, for the CLI to render.
#[derive(Debug, Clone)]
pub enum TransferEvent {
    /// The reference resolved to this manifest (and index) digest.
    Resolved { reference: String, digest: Digest },
    /// A layer is already where it needs to be.
    Exists { short: String },
    /// Bytes moved so far for a layer.
    Progress {
        short: String,
        done: u64,
        total: u64,
    },
    /// A layer finished: `Pull complete`, `Pushed`, `Mounted from REPO`.
    Finished { short: String, how: String },
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: ImageRecord,
    /// The digest the reference resolved to (the index's when it named one):
    /// what `docker pull` prints as `Digest:`.
    pub digest: Digest,
    /// Whether any layer had to be downloaded.
    pub downloaded: bool,
}

/// Whether a pull names the image in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Tag it with the reference's tag (when it has one), as `strata pull` does.
    Tagged,
    /// Leave it unnamed: a build's base on a platform other than the
    /// host's must not take over the name (the store keeps one image per
    /// name, and `strata run` wants the host's).
    Unnamed,
}

/// Pulls `reference` for `platform` into the store, named as `naming` says.
/// Every blob and layer of the image ends up in `lease`.
pub fn pull(
    store: &Store,
    lease: &Lease,
    client: &Client,
    reference: &Reference,
    platform: &Platform,
    naming: Naming,
    events: &(dyn Fn(TransferEvent) + Sync),
) -> Result<Pulled> {
    let resolved = client.resolve(reference, platform)?;
    let top_digest = resolved
        .index
        .as_ref()
        .map(|i| i.digest)
        .unwrap_or(resolved.manifest.digest);
    events(TransferEvent::Resolved {
        reference: reference.to_string(),
        digest: top_digest,
    });
    let config = ImageConfig::from_json(&resolved.config).map_err(|source| ImageError::Config {
        what: reference.to_string(),
        source,
    })?;
    let diff_ids = config.rootfs.diff_ids.clone();
    if diff_ids.len() != resolved.parsed.layers.len() {
        return Err(ImageError::Inconsistent(format!(
            "{reference}: the manifest lists {} layers but the config {} diff_ids",
            resolved.parsed.layers.len(),
            diff_ids.len()
        )));
    }
    let downloads = store.downloads_dir();
    fs_err::create_dir_all(&downloads).map_err(|source| ImageError::Io {
        context: "creating downloads dir".into(),
        source,
    })?;
    // Leased before looking: a blob seen present then stays present.
    {
        let lock = store.lock()?;
        lease.add(
            &lock,
            resolved
                .parsed
                .layers
                .iter()
                .map(|l| l.digest)
                .chain(diff_ids.iter().copied()),
        )?;
    }
    let missing: Vec<&Descriptor> = resolved
        .parsed
        .layers
        .iter()
        .filter(|l| {
            let have = store.has_blob(&l.digest);
            if have {
                events(TransferEvent::Exists {
                    short: l.digest.short(),
                });
            }
            !have
        })
        .collect();
    let downloaded = !missing.is_empty();
    parallel(missing, PARALLEL_DOWNLOADS, |desc| {
        let short = desc.digest.short();
        // Another process pulling the same blob downloads it; we wait and
        // find it stored.
        let _fetching = store.key_lock(KeyKind::Blob, &desc.digest)?;
        if store.has_blob(&desc.digest) {
            events(TransferEvent::Exists { short });
            return Ok(());
        }
        let partial = downloads.join(format!("{}.partial", desc.digest.hex()));
        let total = desc.size;
        client.fetch_blob(&resolved.repository, desc, &partial, &mut |done| {
            events(TransferEvent::Progress {
                short: short.clone(),
                done,
                total,
            })
        })?;
        store.adopt_blob(&store.lock()?, &partial, &desc.digest)?;
        events(TransferEvent::Finished {
            short,
            how: "Pull complete".into(),
        });
        Ok(())
    })?;
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (i, (desc, want)) in resolved.parsed.layers.iter().zip(&diff_ids).enumerate() {
        let rec =
            strata_store::layer_record_for_blob(store, &desc.digest, desc.size, &desc.media_type)?;
        if rec.diff_id != *want {
            return Err(ImageError::Inconsistent(format!(
                "{reference}: layer {} ({}) uncompresses to {} but the config says {want}",
                i + 1,
                desc.digest,
                rec.diff_id
            )));
        }
        layers.push(rec);
    }
    // Blobs, record and lease in one hold of the store lock: GC sees either
    // none of them or the image.
    let lock = store.lock()?;
    let config_digest = store.put_blob_bytes(&lock, &resolved.config)?;
    let manifest_digest = store.put_blob_bytes(&lock, &resolved.manifest.bytes)?;
    debug_assert_eq!(manifest_digest, resolved.manifest.digest);
    let created = config
        .created
        .as_deref()
        .and_then(strata_store::parse_rfc3339)
        .unwrap_or(0);
    let image = ImageRecord {
        id: config_digest,
        manifest: manifest_digest,
        manifest_size: resolved.manifest.bytes.len() as u64,
        config_size: resolved.config.len() as u64,
        layers,
        created,
        parent: None,
        repo_digests: {
            let mut v = vec![reference.with_digest(top_digest).to_string()];
            if let Some(idx) = &resolved.index
                && idx.digest != resolved.manifest.digest
            {
                v.push(reference.with_digest(resolved.manifest.digest).to_string());
            }
            v
        },
    };
    let tags: Vec<String> = if naming == Naming::Tagged && reference.tag.is_some() {
        vec![
            Reference {
                digest: None,
                ..reference.clone()
            }
            .to_string(),
        ]
    } else {
        Vec::new()
    };
    store.commit_image(&lock, &image, &tags)?;
    lease.add(&lock, [config_digest, manifest_digest])?;
    for l in &image.layers {
        store.add_blob_source(&lock, &l.blob, &resolved.repository.to_string())?;
    }
    drop(lock);
    Ok(Pulled {
        image,
        digest: top_digest,
        downloaded,
    })
}

/// The repository `target` names and its tag, which a push needs.
fn repository_and_tag(target: &Reference) -> Result<(Repository, String)> {
    let tag = target
        .tag
        .clone()
        .ok_or_else(|| ImageError::NoTag(target.to_string()))?;
    Ok((Repository::of(target), tag))
}

/// Pushes a stored image to `target` (which must carry a tag); returns the
/// manifest digest the registry now serves. The caller holds `image` in a
/// lease ([`Lease::hold_image`]) so that its blobs stay while they are sent.
pub fn push(
    store: &Store,
    client: &Client,
    image: &ImageRecord,
    target: &Reference,
    events: &(dyn Fn(TransferEvent) + Sync),
) -> Result<Digest> {
    let (repo, tag) = repository_and_tag(target)?;
    // Layers a build kept uncompressed are pushed as they ship (compressed
    // now, once, if nothing has shipped them yet).
    // The image is leased by the caller; the shipped manifest and the
    // encodings join this lease, held while they are sent.
    let shipping = store.lease("push")?;
    let (shipped, _) = store.ship(&shipping, image)?;
    let manifest = store.read_blob(&shipped.manifest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| strata_oci::image::MEDIA_TYPE_OCI_MANIFEST.to_owned());
    let mut blobs: Vec<Descriptor> = shipped
        .layers
        .iter()
        .map(|l: &LayerRecord| Descriptor::new(&l.media_type, l.blob, l.size))
        .collect();
    blobs.push(Descriptor::new(
        strata_oci::image::MEDIA_TYPE_OCI_CONFIG,
        image.id,
        image.config_size,
    ));
    let pushed = push_blobs(store, client, &repo, &target.registry, blobs, events)?;
    let digest = client.put_manifest(&repo, &tag, &media_type, &manifest)?;
    record_sources(store, &repo, &pushed)?;
    Ok(digest)
}

/// What to push for an image whose manifest is not one stored image's
/// (an index with attestations, a manifest with annotations): blobs the
/// store has, small documents in memory, manifests pushed by digest, and
/// the top document pushed under the tag.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Configs and layers, read from the store.
    pub store_blobs: Vec<Descriptor>,
    /// Blobs held in memory (attestation configs and statements).
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    /// Manifests the top document lists, pushed by digest first.
    pub manifests: Vec<(Descriptor, Vec<u8>)>,
    /// The document the tag names: its media type and bytes.
    pub top_media_type: String,
    pub top: Vec<u8>,
}

/// Pushes `upload` to `target`'s repository, its top document under the
/// tag; returns that document's digest. Blobs go first (in parallel,
/// mounted from a sibling repository when one has them), then manifests,
/// so the registry never holds a manifest naming a missing blob.
pub fn push_upload(
    store: &Store,
    client: &Client,
    upload: &Upload,
    target: &Reference,
    events: &(dyn Fn(TransferEvent) + Sync),
) -> Result<Digest> {
    let (repo, tag) = repository_and_tag(target)?;
    let pushed = push_blobs(
        store,
        client,
        &repo,
        &target.registry,
        upload.store_blobs.clone(),
        events,
    )?;
    for (desc, bytes) in &upload.blobs {
        client.push_blob_bytes(&repo, desc, bytes)?;
    }
    for (desc, bytes) in &upload.manifests {
        client.put_manifest(&repo, &desc.digest.to_string(), &desc.media_type, bytes)?;
    }
    let digest = client.put_manifest(&repo, &tag, &upload.top_media_type, &upload.top)?;
    record_sources(store, &repo, &pushed)?;
    Ok(digest)
}

/// Sends the store's `blobs` to `repo` (on `registry`) in parallel, each
/// once however often it is listed (layers several platforms share):
/// skipped when the registry has it, mounted from a sibling repository
/// that we know holds it, else uploaded. Reports each layer as `docker
/// push` does (configs are no layers) and returns the digests sent.
fn push_blobs(
    store: &Store,
    client: &Client,
    repo: &Repository,
    registry: &str,
    blobs: Vec<Descriptor>,
    events: &(dyn Fn(TransferEvent) + Sync),
) -> Result<Vec<Digest>> {
    let here = format!("{registry}/");
    let pushed: Mutex<Vec<Digest>> = Mutex::new(Vec::new());
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<Descriptor> = blobs
        .into_iter()
        .filter(|d| seen.insert(d.digest))
        .collect();
    parallel(unique, PARALLEL_UPLOADS, |desc| {
        let short = desc.digest.short();
        let sibling = store
            .blob_sources(&desc.digest)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| s.strip_prefix(&here).map(str::to_owned))
            .find(|r| *r != repo.name);
        let path = store.blob_path(&desc.digest);
        let open = || std::fs::File::open(&path);
        let how = client.push_blob(repo, &desc, sibling.as_deref(), &open)?;
        pushed.lock().expect("pushed").push(desc.digest);
        if is_config(&desc.media_type) {
            return Ok(());
        }
        events(match how {
            BlobPush::AlreadyExists => TransferEvent::Exists { short },
            BlobPush::Mounted => TransferEvent::Finished {
                short,
                how: format!("Mounted from {}", sibling.unwrap_or_default()),
            },
            BlobPush::Uploaded => TransferEvent::Finished {
                short,
                how: "Pushed".into(),
            },
        });
        Ok(())
    })?;
    Ok(pushed.into_inner().expect("pushed"))
}

/// Remembers that `repo` now holds `digests`, for later cross-repository
/// mounts; done once the manifest naming them is in.
fn record_sources(store: &Store, repo: &Repository, digests: &[Digest]) -> Result<()> {
    let lock = store.lock()?;
    for d in digests {
        store.add_blob_source(&lock, d, &repo.to_string())?;
    }
    Ok(())
}

/// Runs `work` on each of `items` with up to `workers` threads, each
/// taking the next item; the first error stops the others from starting
/// new ones and is returned.
fn parallel<T: Send>(
    items: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let count = items.len();
    let queue = Mutex::new(items);
    let failure: Mutex<Option<ImageError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.min(count) {
            s.spawn(|| {
                loop {
                    if failure.lock().expect("failure slot").is_some() {
                        return;
                    }
                    let Some(item) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    if let Err(e) = work(item) {
                        failure.lock().expect("failure slot").get_or_insert(e);
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("failure slot") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An image config's media type (OCI or Docker).
fn is_config(media_type: &str) -> bool {
    media_type == strata_oci::image::MEDIA_TYPE_OCI_CONFIG
        || media_type == strata_oci::image::MEDIA_TYPE_DOCKER_CONFIG
}
