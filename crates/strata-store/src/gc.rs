//! Garbage collection (free what nothing refers to) and `check` (verify
//! blobs and records, optionally repairing).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use redb::ReadableTable;
use strata_oci::Digest;

use crate::db::*;
use crate::records::*;
use crate::scratch::{disk_usage, remove_any};
use crate::*;

impl Store {
    /// Everything some record or live lease refers to: (blobs, layer
    /// diffIDs). A lease names blobs and diffIDs alike, so `leased` joins
    /// both sets; a leased layer keeps its blob and its re-encodings.
    fn live_set(&self, leased: &BTreeSet<Digest>) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        self.read(|txn| {
            let mut blobs = leased.clone();
            let mut layers = leased.clone();
            let imgs = txn.open_table(IMAGES)?;
            let encodings = txn.open_table(LAYER_ENCODINGS)?;
            for i in all_images(&imgs)? {
                blobs.insert(i.id);
                blobs.insert(i.manifest);
                for l in &i.layers {
                    blobs.insert(l.blob);
                    layers.insert(l.diff_id);
                }
                // The manifest over the shipped encodings (`Store::ship`)
                // lives with the image and those encodings.
                if i.layers.iter().any(|l| l.ship_as.is_some())
                    && let Some(s) = crate::ship::shipped_in(&encodings, &i, &|d| self.has_blob(d))?
                {
                    blobs.insert(s.manifest);
                }
            }
            let cache = txn.open_table(CACHE)?;
            for e in cache.iter()? {
                let (k, v) = e?;
                let r: CacheRecord = from_json("build_cache", k.value(), v.value())?;
                blobs.extend(r.blobs);
                layers.extend(r.diff_ids);
            }
            let lt = txn.open_table(LAYERS)?;
            for e in lt.iter()? {
                let (k, v) = e?;
                let l: LayerRecord = from_json("layers", k.value(), v.value())?;
                if layers.contains(&l.diff_id) {
                    blobs.insert(l.blob);
                }
            }
            let enc = txn.open_table(LAYER_ENCODINGS)?;
            for e in enc.iter()? {
                let (k, v) = e?;
                let r: EncodedLayer = from_json("layer_encodings", k.value(), v.value())?;
                if layers.contains(&r.diff_id) {
                    blobs.insert(r.blob);
                }
            }
            Ok((blobs, layers))
        })
    }

    /// Frees exactly what no image, container, cache record or live lease
    /// refers to: layer records, blobs, snapshots, content indexes, key
    /// locks, dead leases and leftover temporary files.
    pub fn gc(&self, lock: &WriteLock) -> Result<GcReport> {
        let leases = self.lease_roots(lock)?;
        self.write(|txn| prune_layer_table(txn, &self.root, &leases.digests).map(|_| ()))?;
        let (live_blobs, live_layers) = self.live_set(&leases.digests)?;
        let mut report = GcReport {
            leases_removed: leases.removed,
            ..GcReport::default()
        };
        for (d, size) in blobs::list(&self.root)? {
            if !live_blobs.contains(&d) {
                blobs::delete(&self.root, &d)?;
                report.blobs_removed.push(d);
                report.bytes_freed += size;
            }
        }
        let containers = self.containers()?;
        let live_upper: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        let snaps = self.root.join("snapshots");
        let mut dead_snaps = Vec::new();
        for e in fs_err::read_dir(&snaps).map_err(io_err(&snaps))? {
            let e = e.map_err(io_err(&snaps))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let live = Digest::from_hex(&name)
                .map(|d| live_layers.contains(&d))
                .unwrap_or(false);
            if !live {
                dead_snaps.push(name);
                report.snapshot_bytes += disk_usage(&e.path());
                remove_any(&e.path())?;
                report.snapshots_removed += 1;
            }
        }
        if !dead_snaps.is_empty() {
            self.write(|txn| {
                let mut t = txn.open_table(SNAPSHOTS)?;
                for s in &dead_snaps {
                    if let Ok(d) = Digest::from_hex(s) {
                        t.remove(d.to_string().as_str())?;
                    }
                }
                Ok(())
            })?;
        }
        self.remove_dead_indexes(&live_layers)?;
        let mut keyed = live_blobs;
        keyed.extend(live_layers);
        self.remove_dead_key_locks(lock, &keyed)?;
        let cdir = self.root.join("containers");
        for e in fs_err::read_dir(&cdir).map_err(io_err(&cdir))? {
            let e = e.map_err(io_err(&cdir))?;
            if !live_upper.contains(e.file_name().to_string_lossy().as_ref()) {
                remove_any(&e.path())?;
            }
        }
        // Blob temp files are written under the store lock (which we hold)
        // or by a process holding a lease (a build writing a layer into a
        // blob temp file). With no live lease, any left here belong to an
        // interrupted writer.
        if leases.live == 0 {
            report.temp_files_removed += blobs::sweep_temp(&self.root)?;
        }
        // Scratch whose owner is alive (a build running now) stays.
        report.scratch = self.sweep_scratch(lock)?;
        Ok(report)
    }

    /// Verifies every blob's digest and every reference. With `repair`,
    /// removes what is broken (corrupt blobs, images missing blobs, tags and
    /// containers pointing at missing images) and runs GC.
    pub fn check(&self, lock: &WriteLock, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut bad_blobs = BTreeSet::new();
        for (d, _) in blobs::list(&self.root)? {
            report.blobs_checked += 1;
            match blobs::verify(&self.root, &d) {
                Ok(()) => {}
                Err(StoreError::DigestMismatch { actual, .. }) => {
                    report.problems.push(Problem {
                        what: format!("blob {d}: content has digest {actual}"),
                        repaired: repair,
                    });
                    bad_blobs.insert(d);
                }
                Err(e) => return Err(e),
            }
        }
        if repair {
            for d in &bad_blobs {
                blobs::delete(&self.root, d)?;
            }
        }
        let images = self.images()?;
        let mut broken_images = BTreeSet::new();
        for (img, _) in &images {
            report.images_checked += 1;
            let mut need = vec![
                (img.id, "config".to_owned()),
                (img.manifest, "manifest".to_owned()),
            ];
            need.extend(
                img.layers
                    .iter()
                    .map(|l| (l.blob, format!("layer {}", l.diff_id))),
            );
            for (d, what) in need {
                if !self.has_blob(&d) || bad_blobs.contains(&d) {
                    report.problems.push(Problem {
                        what: format!(
                            "image {}: {what} blob {d} is missing or corrupt",
                            img.id.short()
                        ),
                        repaired: repair,
                    });
                    broken_images.insert(img.id);
                }
            }
            if let Some(p) = img.parent
                && !images.iter().any(|(i, _)| i.id == p)
            {
                // Harmless (Docker keeps no parent either after a load), but
                // worth knowing; repaired by dropping the link.
                report.problems.push(Problem {
                    what: format!(
                        "image {}: parent {} is not in the store",
                        img.id.short(),
                        p.short()
                    ),
                    repaired: repair,
                });
            }
        }
        let ids: BTreeSet<Digest> = images.iter().map(|(i, _)| i.id).collect();
        let tags = self.tags()?;
        let bad_tags: Vec<String> = tags
            .iter()
            .filter(|(_, id)| !ids.contains(id))
            .map(|(t, _)| t.clone())
            .collect();
        for t in &bad_tags {
            report.problems.push(Problem {
                what: format!("tag {} points at a missing image", familiar(t)),
                repaired: repair,
            });
        }
        let containers = self.containers()?;
        let bad_containers: Vec<String> = containers
            .iter()
            .filter(|c| !ids.contains(&c.image))
            .map(|c| c.id.clone())
            .collect();
        for c in &bad_containers {
            report.problems.push(Problem {
                what: format!("container {} uses a missing image", short12(c)),
                repaired: repair,
            });
        }
        report.stale_scratch = self.stale_scratch()?;
        // Blobs a running build or reader holds are in use, not unreferenced.
        let (live, _) = self.live_set(&self.lease_roots(lock)?.digests)?;
        report.unreferenced_blobs = blobs::list(&self.root)?
            .iter()
            .filter(|(d, _)| !live.contains(d))
            .count();
        if repair {
            self.write(|txn| {
                let mut imgs = txn.open_table(IMAGES)?;
                let mut tagt = txn.open_table(TAGS)?;
                let mut ct = txn.open_table(CONTAINERS)?;
                for id in &broken_images {
                    imgs.remove(id.to_string().as_str())?;
                }
                let broken: Vec<String> = broken_images.iter().map(|d| d.to_string()).collect();
                let mut drop_tags = bad_tags.clone();
                for e in tagt.iter()? {
                    let (k, v) = e?;
                    if broken.iter().any(|b| b == v.value()) {
                        drop_tags.push(k.value().to_owned());
                    }
                }
                for t in &drop_tags {
                    tagt.remove(t.as_str())?;
                }
                for c in &bad_containers {
                    ct.remove(c.as_str())?;
                }
                let mut fix = Vec::new();
                for i in all_images(&imgs)? {
                    if let Some(p) = i.parent
                        && imgs.get(p.to_string().as_str())?.is_none()
                    {
                        fix.push(ImageRecord { parent: None, ..i });
                    }
                }
                for i in fix {
                    imgs.insert(i.id.to_string().as_str(), to_json(&i)?.as_str())?;
                }
                Ok(())
            })?;
            report.gc = Some(self.gc(lock)?);
        }
        Ok(report)
    }

    /// Bytes the blobs take on disk, counting each once.
    pub fn blob_sizes(&self) -> Result<BTreeMap<Digest, u64>> {
        Ok(blobs::list(&self.root)?.into_iter().collect())
    }
}

pub(crate) fn blob_exists(root: &Path, d: &Digest) -> bool {
    blobs::path(root, d).is_file()
}

/// Removes layer records no image, cache record or live lease (`leased`)
/// needs, and the re-encodings of those layers; returns their diffIDs.
pub(crate) fn prune_layer_table(
    txn: &redb::WriteTransaction,
    root: &Path,
    leased: &BTreeSet<Digest>,
) -> Result<BTreeSet<Digest>, TxnError> {
    let imgs = txn.open_table(IMAGES)?;
    let mut live: BTreeSet<Digest> = leased.clone();
    for i in all_images(&imgs)? {
        live.extend(i.layers.iter().map(|l| l.diff_id));
    }
    let cache = txn.open_table(CACHE)?;
    for e in cache.iter()? {
        let (k, v) = e?;
        let r: CacheRecord = from_json("build_cache", k.value(), v.value())?;
        live.extend(r.diff_ids);
    }
    let mut layers = txn.open_table(LAYERS)?;
    let mut dead = BTreeSet::new();
    for e in layers.iter()? {
        let (k, v) = e?;
        let d = parse_digest("layers", k.value(), k.value())?;
        let _ = v;
        if !live.contains(&d) {
            dead.insert(d);
        }
    }
    for d in &dead {
        layers.remove(d.to_string().as_str())?;
    }
    // Re-encodings of layers nothing needs any more, and those whose blob is
    // gone (`check --repair` removed it as corrupt), go with them.
    let mut enc = txn.open_table(LAYER_ENCODINGS)?;
    let mut stale = Vec::new();
    for e in enc.iter()? {
        let (k, v) = e?;
        let r: EncodedLayer = from_json("layer_encodings", k.value(), v.value())?;
        if !live.contains(&r.diff_id) || !blob_exists(root, &r.blob) {
            stale.push(k.value().to_owned());
        }
    }
    for k in &stale {
        enc.remove(k.as_str())?;
    }
    Ok(dead)
}
