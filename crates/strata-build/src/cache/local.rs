//! The store's step cache: lookups (falling back to `--cache-from`) and records.

use std::sync::atomic::Ordering;

use strata_store::{CacheRecord, LayerRecord};

use super::CachedStep;
use crate::api::Event;
use crate::error::{BuildError, Result};
use crate::solver::{Solver, State};

impl Solver<'_> {
    /// The cache lookup shared by RUN and COPY: on a hit the state advances.
    /// The local cache first, then `--cache-from` sources (whose layer is
    /// fetched now, and the step recorded locally).
    pub(crate) fn cache_hit(&self, key: &str, state: &mut State) -> Result<bool> {
        if self.opts.no_cache || self.plan.no_cache_stages.contains(&state.stage) {
            return Ok(false);
        }
        let local = self
            .store
            .cache_get(key)?
            .and_then(|rec| serde_json::from_value::<CachedStep>(rec.value).ok())
            .map(|s| self.hold_cached(s))
            .transpose()?
            .flatten();
        let step = match local {
            Some(s) => s,
            None => {
                let Some(step) = self
                    .shared
                    .imported
                    .lock()
                    .expect("imported cache")
                    .get(key)
                    .and_then(|v| serde_json::from_value::<CachedStep>(v.clone()).ok())
                else {
                    return Ok(false);
                };
                if let Some(l) = &step.layer {
                    let client = self.opts.registry.clone();
                    let fetched = self
                        .shared
                        .imported
                        .lock()
                        .expect("imported cache")
                        .fetch_blob(self.store, self.lease, client.as_deref(), &l.blob);
                    if let Err(e) = fetched {
                        // A cache that cannot deliver is a miss, not a failure.
                        self.emit(Event::Output {
                            n: self.progress.step_no.load(Ordering::Relaxed),
                            data: format!(
                                "WARNING: cache layer {}: {e}; running the step\n",
                                l.blob
                            )
                            .into_bytes(),
                        });
                        return Ok(false);
                    }
                }
                self.cache_record(key, &step)?;
                step
            }
        };
        if let Some(l) = &step.layer {
            state.layers.push(l.clone());
        }
        state.config = step.config;
        state.key = key.to_owned();
        self.counts.cached.fetch_add(1, Ordering::Relaxed);
        self.shared
            .step_keys
            .lock()
            .expect("step keys")
            .push((state.stage, key.to_owned()));
        Ok(true)
    }

    /// A local cache hit, with its layer held in the build's lease; `None`
    /// when its blob is gone (a prune won the race): a miss.
    fn hold_cached(&self, step: CachedStep) -> Result<Option<CachedStep>> {
        let Some(l) = &step.layer else {
            return Ok(Some(step));
        };
        let lock = self.store.lock()?;
        match self
            .lease
            .hold_layers(self.store, &lock, std::slice::from_ref(l))
        {
            Ok(()) => Ok(Some(step)),
            Err(strata_store::StoreError::MissingBlob { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn cache_store(
        &self,
        key: &str,
        layer: Option<&LayerRecord>,
        state: &State,
    ) -> Result<()> {
        let step = CachedStep {
            layer: layer.cloned(),
            config: state.config.clone(),
        };
        self.cache_record(key, &step)?;
        self.shared
            .step_keys
            .lock()
            .expect("step keys")
            .push((state.stage, key.to_owned()));
        Ok(())
    }

    pub(crate) fn cache_record(&self, key: &str, step: &CachedStep) -> Result<()> {
        let value = serde_json::to_value(step).map_err(|source| BuildError::Json {
            what: "a cache record",
            source,
        })?;
        let rec = CacheRecord {
            value,
            diff_ids: step.layer.iter().map(|l| l.diff_id).collect(),
            blobs: step.layer.iter().map(|l| l.blob).collect(),
            last_used: strata_store::now_unix(),
        };
        self.store.cache_put(&self.store.lock()?, key, &rec)?;
        Ok(())
    }
}
