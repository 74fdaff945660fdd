//! Layers in the encoding they are shipped in. A build stores its layers as
//! plain tars (blob digest = diffID) and marks each with the encoding it is
//! shipped in (`LayerRecord::ship_as`, gzip level 1); an export may ask for
//! another codec or level. Each (diffID, encoding) is made once, the first
//! time an export, `save`, `push` or `--cache-to` needs it, several layers
//! in parallel, and kept as an [`EncodedLayer`] record that lives exactly as
//! long as its layer (GC, `gc.rs`). The encoders are deterministic whatever
//! their thread count, so the shipped bytes, and the manifest naming them,
//! are what a build storing gzip layers directly wrote.
//!
//! Compressing a large layer takes seconds, so it runs outside the store
//! lock (other builds commit meanwhile): each (diffID, codec, level) has
//! its own key lock (`locks/encoding-<hex>`, see `lease.rs`), under which
//! the encoding is looked up again, made into a blob temp file the
//! caller's lease protects, and committed (blob, lease line, record) under
//! the store lock, briefly. Two processes shipping one layer compress it
//! once: the second waits on the key lock and finds the record.

use std::sync::Mutex;

use redb::ReadableTable;
use strata_oci::{Compression, Digest};

use crate::blobs::{self, blob_store};
use crate::cache::encoding_key;
use crate::db::*;
use crate::image::manifest_json;
use crate::{EncodedLayer, ImageRecord, KeyKind, LayerRecord, Lease, Result, Store, StoreError};

/// An image as it is shipped: the manifest over its shipped layers (for an
/// image with no `ship_as` layer, the stored manifest itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub manifest: Digest,
    pub manifest_size: u64,
    /// The layers as the manifest names them.
    pub layers: Vec<LayerRecord>,
}

impl Store {
    /// The blob of each `(layer, encoding)` in `wanted`, in order: the
    /// stored blob when the layer is stored plain and plain is asked, a
    /// kept encoding, or one made now (from the stored blob, decompressed
    /// and compressed in one pass, the tar's digest checked against the
    /// diffID). Every returned blob is added to `lease`, which must already
    /// hold the layers (an image or build lease). Takes the store lock only
    /// around each commit, so it must not be called with the lock held.
    /// Returns the encodings and how many layers were compressed here.
    pub fn encode_layers(
        &self,
        lease: &Lease,
        wanted: &[(LayerRecord, Compression)],
    ) -> Result<(Vec<EncodedLayer>, usize)> {
        let mut found: Vec<Option<EncodedLayer>> = Vec::with_capacity(wanted.len());
        let mut todo: Vec<(LayerRecord, Compression)> = Vec::new();
        for (layer, to) in wanted {
            let known = if *to == Compression::Uncompressed && layer.blob == layer.diff_id {
                Some(EncodedLayer {
                    diff_id: layer.diff_id,
                    blob: layer.blob,
                    size: layer.uncompressed_size,
                })
            } else {
                self.layer_encoding(&layer.diff_id, *to)?
            };
            if known.is_none()
                && !todo
                    .iter()
                    .any(|(l, t)| l.diff_id == layer.diff_id && t == to)
            {
                todo.push((layer.clone(), *to));
            }
            found.push(known);
        }
        // Encodings that existed are leased now, under the lock, each
        // checked to be still there (it lives as long as its layer, which
        // the caller's lease holds); new ones are leased as they commit.
        {
            let lock = self.lock()?;
            let kept: Vec<Digest> = found.iter().flatten().map(|e| e.blob).collect();
            if let Some(d) = kept.iter().find(|d| !self.has_blob(d)) {
                return Err(StoreError::MissingBlob { digest: *d });
            }
            lease.add(&lock, kept)?;
        }
        let made = self.encode_parallel(lease, &todo)?;
        let compressed = made.iter().filter(|(_, now)| *now).count();
        let out = wanted
            .iter()
            .zip(found)
            .map(|((layer, to), known)| {
                known
                    .or_else(|| {
                        todo.iter()
                            .zip(&made)
                            .find(|((l, t), _)| l.diff_id == layer.diff_id && t == to)
                            .map(|(_, (e, _))| e.clone())
                    })
                    .ok_or(StoreError::MissingBlob { digest: layer.blob })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((out, compressed))
    }

    /// Encodes `todo` with up to one worker per core, each worker's encoder
    /// getting its share of the cores (the output never depends on either).
    /// Says of each whether it was compressed here (not by another process
    /// that held its key lock first).
    fn encode_parallel(
        &self,
        lease: &Lease,
        todo: &[(LayerRecord, Compression)],
    ) -> Result<Vec<Encoded>> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = cores.min(todo.len());
        if workers == 0 {
            return Ok(Vec::new());
        }
        let threads_each = (cores / workers).max(1);
        let next = Mutex::new(0usize);
        let results: Mutex<Vec<Option<Result<Encoded>>>> =
            Mutex::new(todo.iter().map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        let i = {
                            let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                            let i = *n;
                            *n += 1;
                            i
                        };
                        let Some((layer, to)) = todo.get(i) else {
                            return;
                        };
                        let r = self.encode_one(lease, layer, *to, threads_each);
                        let failed = r.is_err();
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                        if failed {
                            // No new layer starts after a failure.
                            *next.lock().unwrap_or_else(|e| e.into_inner()) = todo.len();
                        }
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(todo.len());
        for (r, (layer, to)) in results.into_iter().zip(todo) {
            match r {
                Some(r) => out.push(r?),
                None => {
                    return Err(StoreError::InvalidImage(format!(
                        "layer {} was not encoded as {to} (an earlier layer failed)",
                        layer.diff_id
                    )));
                }
            }
        }
        Ok(out)
    }

    /// One encoding, made under its key lock and outside the store lock;
    /// `(encoding, false)` when another process made it meanwhile.
    fn encode_one(
        &self,
        lease: &Lease,
        layer: &LayerRecord,
        to: Compression,
        threads: usize,
    ) -> Result<Encoded> {
        let key = Digest::of(encoding_key(&layer.diff_id, to).as_bytes());
        // Leased before its lock file is opened, so GC keeps the file.
        lease.add(&self.lock()?, [key])?;
        let _making = self.key_lock(KeyKind::Encoding, &key)?;
        if let Some(enc) = self.layer_encoding(&layer.diff_id, to)? {
            let lock = self.lock()?;
            if self.has_blob(&enc.blob) {
                lease.add(&lock, [enc.blob])?;
                return Ok((enc, false));
            }
        }
        let store = blob_store(self.root())?;
        let mut src = store.open_verified(&layer.blob).map_err(blobs::map)?;
        let mut w = self.blob_writer(lease)?;
        let (diff_id, digest, size) =
            match strata_oci::compress::recompress(&mut src, to, threads, &mut w) {
                Ok(v) => v,
                // A corrupt source blob says so by name.
                Err(e) => return Err(blobs::map(src.take_error(e))),
            };
        if diff_id != layer.diff_id {
            return Err(StoreError::InvalidImage(format!(
                "layer blob {} decompresses to a tar with digest {diff_id}, but its record says {}; run `strata check`",
                layer.blob, layer.diff_id
            )));
        }
        let enc = EncodedLayer {
            diff_id,
            blob: digest,
            size,
        };
        // The commit: blob into place and into the lease, then its record.
        let lock = self.lock()?;
        self.commit_blob(&lock, lease, w, Some(digest))?;
        self.put_layer_encoding(&lock, to, &enc)?;
        Ok((enc, true))
    }

    /// `image` as shipped, making the encodings its `ship_as` layers still
    /// lack (outside the store lock, see the module docs) and the manifest
    /// over them; returns how many layers were compressed now. The
    /// manifest is stored as a blob, live while the image and the
    /// encodings are (GC computes it as [`Store::shipped`]); it and the
    /// encodings are added to `lease`, which must hold the image.
    pub fn ship(&self, lease: &Lease, image: &ImageRecord) -> Result<(Shipped, usize)> {
        if image.layers.iter().all(|l| l.ship_as.is_none()) {
            return Ok((as_stored(image), 0));
        }
        let wanted: Vec<(LayerRecord, Compression)> = image
            .layers
            .iter()
            .filter_map(|l| l.ship_as.map(|c| (l.clone(), c)))
            .collect();
        let (encs, made) = self.encode_layers(lease, &wanted)?;
        let mut encs = encs.into_iter();
        let layers = image
            .layers
            .iter()
            .map(|l| match l.ship_as {
                Some(_) => encs
                    .next()
                    .map(|e| l.shipped(&e))
                    .ok_or(StoreError::MissingBlob { digest: l.blob }),
                None => Ok(l.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = manifest_bytes(image, &layers)?;
        let lock = self.lock()?;
        lease.add(&lock, [Digest::of(&bytes)])?;
        let manifest = self.put_blob_bytes(&lock, &bytes)?;
        Ok((
            Shipped {
                manifest,
                manifest_size: bytes.len() as u64,
                layers,
            },
            made,
        ))
    }

    /// `image` as shipped if every encoding it needs exists (`None` if one
    /// is still to be made by [`Store::ship`]). Reads only.
    pub fn shipped(&self, image: &ImageRecord) -> Result<Option<Shipped>> {
        if image.layers.iter().all(|l| l.ship_as.is_none()) {
            return Ok(Some(as_stored(image)));
        }
        self.read(|txn| {
            let t = txn.open_table(LAYER_ENCODINGS)?;
            shipped_in(&t, image, &|d| self.has_blob(d))
        })
    }
}

/// An encoding, and whether this call compressed it (rather than finding
/// it made by another process).
type Encoded = (EncodedLayer, bool);

fn as_stored(image: &ImageRecord) -> Shipped {
    Shipped {
        manifest: image.manifest,
        manifest_size: image.manifest_size,
        layers: image.layers.clone(),
    }
}

/// The manifest JSON over `layers`, as `write_image` writes it.
fn manifest_bytes(image: &ImageRecord, layers: &[LayerRecord]) -> Result<Vec<u8>> {
    serde_json::to_vec(&manifest_json(&image.id, image.config_size, layers))
        .map_err(|e| StoreError::InvalidImage(e.to_string()))
}

/// [`Store::shipped`] inside a transaction (GC's live set uses it).
pub(crate) fn shipped_in(
    encodings: &impl ReadableTable<&'static str, &'static str>,
    image: &ImageRecord,
    has_blob: &dyn Fn(&Digest) -> bool,
) -> Result<Option<Shipped>, TxnError> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for l in &image.layers {
        let Some(to) = l.ship_as else {
            layers.push(l.clone());
            continue;
        };
        let key = encoding_key(&l.diff_id, to);
        let enc: EncodedLayer = match encodings.get(key.as_str())? {
            Some(v) => from_json("layer_encodings", &key, v.value())?,
            None => return Ok(None),
        };
        if !has_blob(&enc.blob) {
            return Ok(None);
        }
        layers.push(l.shipped(&enc));
    }
    let bytes = manifest_bytes(image, &layers)?;
    Ok(Some(Shipped {
        manifest: Digest::of(&bytes),
        manifest_size: bytes.len() as u64,
        layers,
    }))
}
