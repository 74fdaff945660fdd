//! The solver's side of `--cache-from` and `--cache-to`: reading the
//! caches' manifests before the stages run, writing this build's steps after.

use std::time::Instant;

use super::Solver;
use crate::api::{Event, InternalWork};
use crate::cache::CachedStep;
use crate::cache::remote::{CacheExport, CacheLocation, ImportedCache, export};
use crate::error::{BuildError, Result, other};

impl Solver<'_> {
    /// Reads the `--cache-from` manifests (not their layers).
    pub(crate) fn import_caches(&self) -> Result<()> {
        let n = self.next_step();
        let names: Vec<String> = self
            .opts
            .cache_from
            .iter()
            .map(|c| match c {
                CacheLocation::Registry(r) => r.to_string(),
                CacheLocation::Local(d) => d.display().to_string(),
            })
            .collect();
        self.emit(Event::Step {
            n,
            name: format!(
                "[internal] importing cache manifest from {}",
                names.join(", ")
            ),
        });
        let start = Instant::now();
        let client = self.opts.registry.clone();
        let (imported, warnings) = ImportedCache::load(client.as_deref(), &self.opts.cache_from)?;
        for w in warnings {
            self.emit(Event::Output {
                n,
                data: format!("WARNING: {w}\n").into_bytes(),
            });
        }
        self.emit(Event::Output {
            n,
            data: format!("{} cached steps available\n", imported.len()).into_bytes(),
        });
        *self.shared.imported.lock().expect("imported cache") = imported;
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// The cache keys of this build's steps that `dest` takes: every step
    /// with `mode=max`, else the steps of the stages in `chain` (the target
    /// and the stages it is built FROM).
    pub(crate) fn cache_keys(
        &self,
        dest: &CacheExport,
        chain: &std::collections::HashSet<usize>,
    ) -> Vec<String> {
        let step_keys = self.shared.step_keys.lock().expect("step keys").clone();
        step_keys
            .into_iter()
            .filter(|(stage, _)| dest.max || chain.contains(stage))
            .map(|(_, key)| key)
            .collect()
    }

    /// Writes the cached steps of `keys` (this build's, and with several
    /// platforms the earlier platforms' too) to a `--cache-to`
    /// destination: one cache for the build, as BuildKit's
    /// `solver/llbsolver/solver.go` exports each platform's result into
    /// the one cache exporter and finalizes it once.
    pub(crate) fn export_cache(&self, dest: &CacheExport, keys: &[String]) -> Result<()> {
        let n = self.next_step();
        let name = match &dest.location {
            CacheLocation::Registry(r) => r.to_string(),
            CacheLocation::Local(d) => d.display().to_string(),
        };
        self.emit(Event::Step {
            n,
            name: format!(
                "exporting cache to {name} (mode={})",
                if dest.max { "max" } else { "min" }
            ),
        });
        let start = Instant::now();
        let mut records = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for key in keys {
            if !seen.insert(key.clone()) {
                continue;
            }
            let Some(rec) = self.store.cache_get(key)? else {
                continue;
            };
            let layer = serde_json::from_value::<CachedStep>(rec.value.clone())
                .ok()
                .and_then(|s| s.layer);
            records.push((key.clone(), rec.value, layer));
        }
        // Layers kept uncompressed are exported as they ship (compressed
        // now if no output has yet), so the cache's bytes and the records
        // in it are what they were when builds stored gzip layers.
        let lazy: Vec<(strata_store::LayerRecord, strata_oci::Compression)> = records
            .iter()
            .filter_map(|(_, _, l)| l.as_ref())
            .filter_map(|l| l.ship_as.map(|c| (l.clone(), c)))
            .collect();
        let compress_start = Instant::now();
        // Compressed outside the store lock (other builds commit
        // meanwhile); each encoding joins this build's lease as it commits.
        let (encs, made) = self.store.encode_layers(self.lease, &lazy)?;
        if made > 0 {
            self.emit_internal(InternalWork::Compressing { layers: made }, compress_start);
        }
        let mut encs = encs.into_iter();
        let mut records_out = Vec::with_capacity(records.len());
        for (key, mut value, layer) in records {
            let layer = match layer {
                Some(l) if l.ship_as.is_some() => {
                    let enc = encs
                        .next()
                        .ok_or_else(|| other(format!("no shipped form of layer {}", l.diff_id)))?;
                    let shipped = l.shipped(&enc);
                    value["layer"] =
                        serde_json::to_value(&shipped).map_err(|source| BuildError::Json {
                            what: "a cache record",
                            source,
                        })?;
                    Some(shipped)
                }
                other => other,
            };
            let descriptors = layer
                .map(|l| {
                    vec![strata_oci::image::Descriptor::new(
                        l.media_type.clone(),
                        l.blob,
                        l.size,
                    )]
                })
                .unwrap_or_default();
            records_out.push((key, value, descriptors));
        }
        let records = records_out;
        let client = self.opts.registry.clone();
        let digest = export(self.store, client.as_deref(), &records, &dest.location)?;
        self.emit(Event::Output {
            n,
            data: format!("{} steps, manifest {digest}\n", records.len()).into_bytes(),
        });
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(())
    }
}
