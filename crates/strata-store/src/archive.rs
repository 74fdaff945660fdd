//! `save` and `load`: the store's side of strata-oci's archive codec
//! ([`strata_oci::archive`], which is fuzzed). An archive is at once a
//! docker-archive (`manifest.json`) and an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`), as Docker 25+ writes it; blobs are
//! content-addressed, so layers shared by several images are stored once.
//!
//! The codec reads straight into the store's blob directory (nothing is
//! extracted, every digest and diffID is checked, and every layer's entries
//! are checked to be ones that unpack); this adapter turns what it read
//! into image records, each committed in one transaction after its blobs.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use strata_oci::Digest;
use strata_oci::archive::{self, ArchiveFormat, StoredImage};
use strata_oci::compress::Detected;

use crate::image::manifest_json;
use crate::{
    ImageRecord, LayerRecord, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, Result, Store, StoreError,
    WriteLock, blobs, normalize_reference,
};

/// An image `load` stored, with the tags it set.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    pub tags: Vec<String>,
}

const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Writes `images` (each with the normalised tags to record for it) as one
/// archive to `out`, which errors name `dest` (a path, or what stands for
/// stdout or a daemon). Each blob is written once however many images share
/// it; each manifest as shipped (for layers kept uncompressed until shipped,
/// the encodings [`Store::ship`] made, which must exist: call it first), so
/// the archive's digests are the ones `push` and `images --digests` show.
pub fn save_archive(
    store: &Store,
    images: &[(ImageRecord, Vec<String>)],
    dest: &Path,
    out: impl Write,
) -> Result<()> {
    let stored: Vec<StoredImage> = images
        .iter()
        .map(|(img, tags)| {
            let shipped = store.shipped(img)?.ok_or_else(|| {
                StoreError::InvalidImage(format!(
                    "image {}: its layers are not compressed for shipping yet (Store::ship)",
                    img.id
                ))
            })?;
            Ok(StoredImage {
                manifest: shipped.manifest,
                names: tags.clone(),
            })
        })
        .collect::<Result<_>>()?;
    let blob_store = blobs::blob_store(store.root())?;
    archive::write_stored_archive(out, &blob_store, &stored, ArchiveFormat::Docker).map_err(
        |source| StoreError::Archive {
            path: dest.to_path_buf(),
            source,
        },
    )
}

/// Loads every image of a docker-archive or OCI layout tar (plain or
/// compressed) read from `input`, named `name` in errors. An image index in
/// the archive yields the host platform's image. Blobs are stored first and
/// each image is recorded in one transaction afterwards.
pub fn load_archive(
    store: &Store,
    lock: &WriteLock,
    name: &Path,
    input: impl Read,
) -> Result<Vec<LoadedImage>> {
    let blob_store = blobs::blob_store(store.root())?;
    let before: BTreeSet<Digest> = blobs::list(store.root())?
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    let read =
        archive::read_archive_for_platform(input, &blob_store, &strata_oci::Platform::host())
            .map_err(|source| StoreError::Archive {
                path: name.to_owned(),
                source,
            })?;
    let mut out = Vec::new();
    let mut live: BTreeSet<Digest> = BTreeSet::new();
    for image in &read {
        let (record, tags) = record_of(store, lock, name, image)?;
        live.extend([record.id, record.manifest]);
        live.extend(record.layers.iter().map(|l| l.blob));
        store.commit_image(lock, &record, &tags)?;
        out.push(LoadedImage {
            id: record.id,
            tags,
        });
    }
    // The archive's own manifests (the store writes its own, below) and any
    // other file it held that no image uses: nothing refers to them.
    for (d, _) in blobs::list(store.root())? {
        if !before.contains(&d) && !live.contains(&d) {
            blobs::delete(store.root(), &d)?;
        }
    }
    Ok(out)
}

/// The image record (and normalised tags) of an image the codec read: its
/// layers as stored, and a manifest the store writes for them (so that the
/// same image loaded from either format has the same record).
fn record_of(
    store: &Store,
    lock: &WriteLock,
    name: &Path,
    image: &archive::LoadedImage,
) -> Result<(ImageRecord, Vec<String>)> {
    let mut layers = Vec::new();
    for (desc, layer) in image.manifest.layers.iter().zip(&image.layers) {
        let media_type = match layer.compression {
            Detected::Gzip => MEDIA_LAYER_GZIP,
            Detected::Zstd => MEDIA_LAYER_ZSTD,
            Detected::Plain => MEDIA_LAYER_TAR,
            Detected::Bzip2 | Detected::Xz => {
                return Err(StoreError::Archive {
                    path: name.to_owned(),
                    source: strata_oci::archive::ArchiveError::LayerCompression {
                        what: desc.digest.to_string(),
                        kind: if layer.compression == Detected::Xz {
                            "xz"
                        } else {
                            "bzip2"
                        },
                    },
                });
            }
        };
        layers.push(LayerRecord {
            diff_id: layer.diff_id,
            blob: desc.digest,
            media_type: media_type.to_owned(),
            size: desc.size,
            uncompressed_size: layer.uncompressed_size,
            ship_as: None,
        });
    }
    let id = image.manifest.config.digest;
    let config_size = image.manifest.config.size;
    let man = serde_json::to_vec(&manifest_json(&id, config_size, &layers))
        .map_err(|e| StoreError::InvalidImage(e.to_string()))?;
    let manifest = store.put_blob_bytes(lock, &man)?;
    let created = image
        .config
        .created
        .as_deref()
        .and_then(crate::parse_rfc3339)
        .unwrap_or(0);
    let record = ImageRecord {
        repo_digests: Vec::new(),
        id,
        manifest,
        manifest_size: man.len() as u64,
        config_size,
        layers,
        created,
        parent: None,
    };
    let tags = image
        .names
        .iter()
        .map(|t| normalize_reference(t))
        .collect::<Result<_>>()?;
    Ok((record, tags))
}
