//! The solver: one build's shared state ([`Solver`]) and one platform's
//! build from it; each concern of a step has its own module.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

use serde::{Deserialize, Serialize};
use strata_frontend::{BuildInputs, Dockerfile, GlobalScope, Graph, Instruction, Stage};
use strata_oci::Digest;
use strata_oci::compress::Compression;
use strata_oci::image::ImageConfig;
use strata_store::{ImageRecord, KeyKind, LayerRecord, Lease, Store};

use crate::api::{BuildOptions, Event, InternalWork};
use crate::cache::remote as remote_cache;
use crate::context;
use crate::error::{BuildError, Result, context, io, other};

mod base;
mod dispatch;
mod named;
pub(crate) mod once;
mod run_step;
mod schedule;
mod shared_cache;
mod stream;

pub(crate) use crate::config::clean_abs;

/// The image state after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct State {
    pub(crate) layers: Vec<LayerRecord>,
    pub(crate) config: ImageConfig,
    pub(crate) key: String,
    pub(crate) base_image: Option<Digest>,
    /// The stage whose steps advance this state.
    #[serde(skip)]
    pub(crate) stage: usize,
    /// Whether this stage has set CMD: ENTRYPOINT then keeps it, and resets
    /// only a CMD inherited from the base (BuildKit's `cmdSet`).
    #[serde(skip)]
    pub(crate) cmd_set: bool,
    /// The ARGs the stage has declared, passed on to a stage built FROM it
    /// (see `StageScope`).
    #[serde(skip)]
    pub(crate) args: strata_frontend::StageScope,
}

/// Where a RUN heredoc script (`#!`) is mounted, as in BuildKit; inside the
/// step's own /dev (a tmpfs), so it never reaches the step's layer.
pub(crate) const PIPES: &str = "/dev/pipes";

/// One build's shared state. Stages run on their own threads, so everything
/// that changes during a build sits behind a lock or is atomic; a stage's own
/// image state (`State`) is owned by its thread.
///
/// The build holds no store lock while it runs: `lease` names every blob and
/// layer it reads or writes (so GC keeps them), and each commit (a blob, a
/// cache record, a snapshot, the image) takes the store lock just for itself.
pub(crate) struct Solver<'a> {
    pub(crate) store: &'a Store,
    pub(crate) lease: &'a Lease,
    pub(crate) opts: &'a BuildOptions,
    /// What is built: read once, never changed.
    pub(crate) plan: Plan,
    pub(crate) dates: Dates,
    pub(crate) progress: Progress<'a>,
    pub(crate) counts: Counts,
    pub(crate) schedule: Schedule,
    pub(crate) context_files: ContextFiles,
    pub(crate) shared: Shared,
}

/// The parsed Dockerfile and what the build makes of it.
pub(crate) struct Plan {
    pub(crate) df: Dockerfile,
    /// Build args and platforms, as ARGs see them.
    pub(crate) inputs: BuildInputs,
    /// The predefined platform ARGs and the ARGs before the first FROM.
    pub(crate) global: GlobalScope,
    pub(crate) stages: Vec<Stage>,
    pub(crate) graph: Graph,
    /// Stage indexes named by `--no-cache-filter`.
    pub(crate) no_cache_stages: Vec<usize>,
}

/// The dates a build writes.
pub(crate) struct Dates {
    /// The build epoch: layer file times.
    pub(crate) epoch: i64,
    /// `created` of history entries and the image (RFC 3339).
    pub(crate) created: String,
}

/// Progress reporting.
pub(crate) struct Progress<'a> {
    pub(crate) events: Mutex<&'a mut (dyn FnMut(Event) + Send)>,
    /// The last step number given out.
    pub(crate) step_no: AtomicUsize,
    /// Put before stage labels in progress (`linux/arm64 `) when a build
    /// makes several platforms; else empty.
    pub(crate) label: String,
}

/// What the steps did, for the build's summary.
#[derive(Default)]
pub(crate) struct Counts {
    /// Layers written.
    pub(crate) built: AtomicUsize,
    pub(crate) cached: AtomicUsize,
    /// RUN steps run.
    pub(crate) run: AtomicUsize,
}

/// Stages on threads: who is done, and whether to stop.
#[derive(Default)]
pub(crate) struct Schedule {
    /// Finished stages, by index; `stage_done` is signalled on each insert.
    pub(crate) done: Mutex<HashMap<usize, State>>,
    pub(crate) stage_done: Condvar,
    /// Set by the first failure: stages not started do not start, running
    /// ones stop before their next instruction.
    pub(crate) cancelled: std::sync::Arc<AtomicBool>,
}

/// The build context's rules and known content hashes.
pub(crate) struct ContextFiles {
    pub(crate) ignore: context::Ignore,
    /// Content hashes of context files from earlier builds.
    pub(crate) hash_cache: context::HashCache,
}

/// One image's pull in a build: empty until the first stage needing it has
/// pulled it (holding the inner lock meanwhile).
pub(crate) type PulledOnce = std::sync::Arc<Mutex<Option<ImageRecord>>>;

/// A named context's state for one platform: empty until the first step
/// needing it has made it (holding the inner lock meanwhile).
pub(crate) type NamedOnce = std::sync::Arc<Mutex<Option<State>>>;

/// What stages share while they run.
#[derive(Default)]
pub(crate) struct Shared {
    /// Merged root filesystems of stages/images used by COPY --from, made
    /// only for steps that run.
    pub(crate) rootfs: Mutex<HashMap<String, strata_store::ScratchDir>>,
    /// Merged content indexes of stages/images used by COPY --from and
    /// RUN --mount=from=: what their cache keys are computed from.
    pub(crate) trees: Mutex<HashMap<String, std::sync::Arc<strata_store::MergedTree>>>,
    /// Images already pulled in this build (`--pull` pulls each once), a
    /// once-cell per `name platform`.
    pub(crate) pulled: Mutex<HashMap<String, PulledOnce>>,
    /// Named contexts' states, a once-cell per `name platform`.
    pub(crate) named: Mutex<HashMap<String, NamedOnce>>,
    /// Step results from `--cache-from`.
    pub(crate) imported: Mutex<remote_cache::ImportedCache>,
    /// Every step key this build ended with, by stage (for `--cache-to`).
    pub(crate) step_keys: Mutex<Vec<(usize, String)>>,
    /// Base images used (FROM, `--from`), for the provenance.
    pub(crate) materials: Mutex<Vec<crate::provenance::ImageMaterial>>,
}

/// What differs between the builds of one `strata build` for each platform.
pub(crate) struct PlatformBuild<'a> {
    pub(crate) inputs: BuildInputs,
    /// The store names this platform's image gets.
    pub(crate) tags: &'a [String],
    /// Put before each step's stage label (`linux/arm64 `), or empty.
    pub(crate) label: String,
    /// Progress step numbers continue from here.
    pub(crate) first_step: usize,
    /// Per `--cache-to` destination, the cache keys earlier platforms of
    /// this build chose; the last platform exports them with its own.
    pub(crate) earlier_cache_keys: &'a [Vec<String>],
    /// Whether this is the build's last platform (which writes `--cache-to`).
    pub(crate) last: bool,
}

/// Counts from one platform's build.
pub(crate) struct PlatformStats {
    pub(crate) built: usize,
    pub(crate) cached: usize,
    pub(crate) run: usize,
    pub(crate) hashed: usize,
    pub(crate) steps_numbered: usize,
    /// Base images the build used, in the order first used.
    pub(crate) materials: Vec<crate::provenance::ImageMaterial>,
    /// Per `--cache-to` destination, the keys of this platform and the
    /// earlier ones (see [`PlatformBuild::earlier_cache_keys`]).
    pub(crate) cache_keys: Vec<Vec<String>>,
    /// The other stages the build ran, by BuildKit's stage name, with
    /// their layers: only for `--attest type=sbom,scan-stage=true`.
    pub(crate) stages: Vec<(String, Vec<LayerRecord>)>,
}

/// One platform's build: the stages it needs, the image committed to the
/// store (named by `tags`), and `--cache-to`.
pub(crate) fn build_platform(
    store: &Store,
    lease: &Lease,
    opts: &BuildOptions,
    pb: PlatformBuild<'_>,
    epoch: i64,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<(ImageRecord, PlatformStats)> {
    let PlatformBuild {
        inputs,
        tags,
        label,
        first_step,
        earlier_cache_keys,
        last,
    } = pb;
    let df = strata_frontend::parse(&opts.dockerfile, &opts.dockerfile_name)
        .map_err(|d| BuildError::Dockerfile(Box::new(d)))?;
    let (global, stages) =
        strata_frontend::stages(&df, &inputs).map_err(|d| BuildError::Dockerfile(Box::new(d)))?;
    let graph = strata_frontend::graph(&df, &stages, opts.target.as_deref()).map_err(|d| {
        if d.source_line.is_empty() {
            // Not located in the file: an unknown --target.
            other(d.message)
        } else {
            BuildError::Dockerfile(Box::new(d))
        }
    })?;
    let graph = crate::named_context::without_replaced_stages(graph, &stages, opts);
    let (target, needed) = (graph.target, graph.needed.clone());
    let created_secs = if opts.timestamp_now {
        strata_store::now_unix()
    } else {
        epoch
    };
    let ignore = context::Ignore::load(&opts.context, &opts.dockerfile_name)?;
    let no_cache_stages = opts
        .no_cache_filter
        .iter()
        .map(|f| {
            stages
                .iter()
                .find(|s| {
                    s.name.as_deref() == Some(f.to_lowercase().as_str())
                        || f.parse::<usize>() == Ok(s.index)
                })
                .map(|s| s.index)
                .ok_or_else(|| other(format!("--no-cache-filter: no stage named {f:?}")))
        })
        .collect::<Result<_>>()?;
    let solver = Solver {
        store,
        lease,
        opts,
        plan: Plan {
            df,
            inputs,
            global,
            stages: stages.clone(),
            graph,
            no_cache_stages,
        },
        dates: Dates {
            epoch,
            created: strata_store::rfc3339(created_secs),
        },
        progress: Progress {
            events: Mutex::new(events),
            step_no: AtomicUsize::new(first_step),
            label,
        },
        counts: Counts::default(),
        schedule: Schedule {
            cancelled: opts.cancel.clone().unwrap_or_default(),
            ..Schedule::default()
        },
        context_files: ContextFiles {
            ignore,
            hash_cache: context::HashCache::load(store, &opts.context)?,
        },
        shared: Shared::default(),
    };
    if !opts.cache_from.is_empty() {
        solver.import_caches()?;
    }
    let ran = solver.run_stages(&stages, &needed, opts.jobs);
    // What was hashed is worth keeping even when a step failed.
    let context_files_hashed = solver.context_files.hash_cache.fresh_count();
    solver.context_files.hash_cache.save(store)?;
    let used: Vec<String> = solver
        .shared
        .step_keys
        .lock()
        .expect("step keys")
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    store.cache_touch(&store.lock()?, &used, strata_store::now_unix())?;
    ran?;
    let mut state = solver
        .schedule
        .done
        .lock()
        .expect("done map")
        .remove(&target)
        .ok_or_else(|| other("target stage was not built"))?;
    for (k, v) in &opts.labels {
        state
            .config
            .config
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(k.clone(), v.clone());
    }
    let (built, cached, run) = (
        solver.counts.built.load(Ordering::Relaxed),
        solver.counts.cached.load(Ordering::Relaxed),
        solver.counts.run.load(Ordering::Relaxed),
    );
    state.config.created = Some(solver.dates.created.clone());
    let steps_numbered = solver.progress.step_no.load(Ordering::Relaxed);
    let image = commit(store, lease, &state, tags)?;
    let mut cache_keys = Vec::with_capacity(opts.cache_to.len());
    for (i, dest) in opts.cache_to.iter().enumerate() {
        let chain = base_chain(&stages, target);
        let mut keys = earlier_cache_keys.get(i).cloned().unwrap_or_default();
        keys.extend(solver.cache_keys(dest, &chain));
        if last {
            solver.export_cache(dest, &keys)?;
        }
        cache_keys.push(keys);
    }
    let materials = std::mem::take(&mut *solver.shared.materials.lock().expect("materials"));
    let scan_stages = opts
        .attestations
        .sbom
        .as_ref()
        .is_some_and(|s| s.scan_stage);
    let mut ran_stages: Vec<(usize, Vec<LayerRecord>)> = if scan_stages {
        let done = solver.schedule.done.lock().expect("done map");
        done.iter().map(|(i, st)| (*i, st.layers.clone())).collect()
    } else {
        Vec::new()
    };
    ran_stages.sort_by_key(|(i, _)| *i);
    // An unnamed stage is `stage-N`, as BuildKit's dockerfile frontend
    // names it.
    let stage_name = |i: usize| {
        stages
            .iter()
            .find(|s| s.index == i)
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| format!("stage-{i}"))
    };
    let ran_stages = ran_stages
        .into_iter()
        .map(|(i, layers)| (stage_name(i), layers))
        .collect();
    drop(solver);
    Ok((
        image,
        PlatformStats {
            built,
            cached,
            run,
            hashed: context_files_hashed,
            steps_numbered,
            materials,
            cache_keys,
            stages: ran_stages,
        },
    ))
}

/// The target stage and the stages it is built FROM, transitively: the
/// stages whose steps make up the result image (`--cache-to mode=min`).
pub(crate) fn base_chain(stages: &[Stage], target: usize) -> std::collections::HashSet<usize> {
    let mut out = std::collections::HashSet::new();
    let mut cur = Some(target);
    while let Some(i) = cur {
        if !out.insert(i) {
            break;
        }
        let base = stages[i].base.to_lowercase();
        cur = stages
            .iter()
            .find(|s| s.index < i && s.name.as_deref() == Some(base.as_str()))
            .map(|s| s.index);
    }
    out
}

/// Records the image of `state` (named `tags`) and leases it, in one hold
/// of the store lock: the exports that follow read it while a concurrent
/// `rmi` may untag and delete it.
pub(crate) fn commit(
    store: &Store,
    lease: &Lease,
    state: &State,
    tags: &[String],
) -> Result<ImageRecord> {
    let mut config = state.config.clone();
    config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id).collect();
    let value = serde_json::from_slice(&config.to_json()).map_err(|source| BuildError::Json {
        what: "the image config",
        source,
    })?;
    let lock = store.lock()?;
    let image = strata_store::write_image(
        store,
        &lock,
        value,
        state.layers.clone(),
        state.base_image,
        tags,
    )?;
    lease.hold_image(store, &lock, &image, &image.id.to_string())?;
    Ok(image)
}

impl Solver<'_> {
    pub(crate) fn next_step(&self) -> usize {
        self.progress.step_no.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub(crate) fn emit(&self, e: Event) {
        // A panicking renderer poisons the lock; progress is then lost, not the build.
        if let Ok(mut f) = self.progress.events.lock() {
            f(e);
        }
    }

    pub(crate) fn fail(&self, ins: &Instruction, msg: &str) -> BuildError {
        BuildError::Dockerfile(Box::new(self.plan.df.error(ins, msg)))
    }

    /// Reports work done outside the steps, as its own progress line.
    pub(crate) fn emit_internal(&self, work: InternalWork, started: std::time::Instant) {
        let n = self.next_step();
        self.emit(Event::Internal {
            n,
            work,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    /// Unpacks the state's layers into snapshots (once each); top-most first.
    pub(crate) fn lowers(&self, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
        let started = std::time::Instant::now();
        let (lowers, unpacked) = strata_image::lowers_counted(self.store, self.lease, layers)?;
        if unpacked > 0 {
            self.emit_internal(InternalWork::Unpacking { layers: unpacked }, started);
        }
        Ok(lowers)
    }

    /// Makes `dir` (an unpacked copy of layer `l`, on the store's
    /// filesystem) the snapshot of `l`, unless the store has one already.
    pub(crate) fn adopt_snapshot(&self, l: &LayerRecord, dir: &Path) -> Result<()> {
        if self.store.snapshot_ready(&l.diff_id)? {
            return Ok(());
        }
        let _making = self.store.key_lock(KeyKind::Snapshot, &l.diff_id)?;
        if self.store.snapshot_ready(&l.diff_id)? {
            // Another build made it meanwhile.
            return Ok(());
        }
        let dest = self.store.snapshot_dir(&l.diff_id);
        if dest.exists() {
            strata_exec::snapshot::remove_tree(&dest)?;
        }
        fs_err::rename(dir, &dest)?;
        self.store.snapshot_done(&self.store.lock()?, &l.diff_id)?;
        Ok(())
    }

    /// A scratch directory owned by this build (its lock tells a later
    /// build's sweep that it is live); removed when dropped.
    pub(crate) fn scratch(&self) -> Result<strata_store::ScratchDir> {
        Ok(self.store.scratch_dir("build")?)
    }

    /// Writes `changes` under `root` as a layer into the store, with its
    /// content index, in one pass over the bytes: the tar writer's output
    /// goes to the blob writer (the layer is stored uncompressed, so the
    /// blob is named by its diffID) and through a pipe to a thread indexing
    /// it. The index is made by the same tar reader that indexes pulled and
    /// loaded layers (`LayerIndex::from_tar`), fed the stream as it is
    /// written, so a layer's index is the same however the layer arrived,
    /// and nothing is written to scratch or read back. The gzip form is
    /// made only when the layer is shipped (`Store::ship`).
    pub(crate) fn write_layer(
        &self,
        root: &Path,
        changes: &[strata_oci::Change],
    ) -> Result<LayerRecord> {
        let started = std::time::Instant::now();
        let tar_opts = strata_oci::layer::LayerOptions {
            compression: Compression::Uncompressed,
            epoch: Some(self.dates.epoch),
            threads: 1,
            // Rootless, RUN leaves files owned by host sub-IDs; the layer
            // records the IDs the image sees.
            owners: strata_exec::idmap::IdMapping::current().owner_map(),
        };
        // The tar writer hashes every byte it writes here (the diffID, which
        // is the plain blob's digest): the blob is not hashed again.
        let mut blob = self.store.blob_writer_digest_given(self.lease)?;
        // The indexer reads the tar on a thread of its own, in the chunks
        // the buffer below flushes (a channel, not a pipe: no copy through
        // the kernel, no wake-up per 64 KiB).
        let (to_index, from_tar) = stream::chunk_channel(4);
        let (tar, index) = std::thread::scope(|s| {
            let indexer = s.spawn(move || strata_store::LayerIndex::from_tar(from_tar));
            let mut out = std::io::BufWriter::with_capacity(
                stream::CHUNK,
                stream::Tee {
                    first: &mut blob,
                    second: Some(to_index),
                },
            );
            let tar = strata_oci::layer::write_layer(root, changes, &tar_opts, &mut out)
                .map_err(context("writing a layer"))
                .and_then(|tar| {
                    out.flush().map_err(io("writing a layer"))?;
                    Ok(tar)
                });
            // Dropping the pipe's end ends the indexer's stream.
            drop(out);
            let index = indexer
                .join()
                .map_err(|_| other("the layer indexer panicked"))
                .and_then(|r| r.map_err(io("indexing a layer as it was written")));
            (tar, index)
        });
        let tar = tar?;
        let index = index?;
        // The layer is leased in the same hold of the store lock that
        // commits its blob, so GC cannot free it before a record names it.
        let lock = self.store.lock()?;
        self.lease.add(&lock, [tar.diff_id])?;
        let (digest, size) = self
            .store
            .commit_blob(&lock, self.lease, blob, Some(tar.diff_id))?;
        drop(lock);
        self.store.put_layer_index(&tar.diff_id, &index)?;
        self.emit_internal(InternalWork::WritingLayer, started);
        Ok(LayerRecord {
            diff_id: tar.diff_id,
            blob: digest,
            media_type: strata_store::MEDIA_LAYER_TAR.to_owned(),
            size,
            uncompressed_size: tar.uncompressed_size,
            ship_as: Some(Compression::default()),
        })
    }

    pub(crate) fn finish_step(
        &self,
        key: &str,
        layer: Option<LayerRecord>,
        state: &mut State,
        history: String,
    ) -> Result<()> {
        if let Some(l) = &layer {
            state.layers.push(l.clone());
            self.counts.built.fetch_add(1, Ordering::Relaxed);
        }
        state.config.push_step(
            layer.as_ref().map(|l| l.diff_id),
            Some(self.dates.created.clone()),
            history,
        );
        state.key = key.to_owned();
        self.cache_store(key, layer.as_ref(), state)
    }
}
