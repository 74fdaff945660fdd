//! The solver's side of `--cache-from` and `--cache-to`: reading the
//! caches' manifests before the stages run, writing this build's steps after.

use std::time::Instant;

use super::Solver;
use crate::api::Event;
use crate::cache::CachedStep;
use crate::cache::remote::{CacheExport, CacheLocation, ImportedCache, export};
use crate::error::Result;

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

    /// Writes the steps of this build to a `--cache-to` destination.
    pub(crate) fn export_cache(
        &self,
        dest: &CacheExport,
        chain: &std::collections::HashSet<usize>,
    ) -> Result<()> {
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
        let step_keys = self.shared.step_keys.lock().expect("step keys").clone();
        for (stage, key) in &step_keys {
            if !(dest.max || chain.contains(stage)) || !seen.insert(key.clone()) {
                continue;
            }
            let Some(rec) = self.store.cache_get(key)? else {
                continue;
            };
            let layers = serde_json::from_value::<CachedStep>(rec.value.clone())
                .ok()
                .and_then(|s| s.layer)
                .map(|l| {
                    vec![strata_oci::image::Descriptor::new(
                        l.media_type.clone(),
                        l.blob,
                        l.size,
                    )]
                })
                .unwrap_or_default();
            records.push((key.clone(), rec.value, layers));
        }
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
