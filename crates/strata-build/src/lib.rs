//! The solver behind `strata build`: walks the stages the target needs in
//! dependency order, computes each step's content-addressed cache key, runs or
//! reuses steps, implements COPY semantics and the exporters. It reports
//! progress through [`Event`]s and never prints.

mod checks;
mod context;
mod copy;
mod emulation;
mod export;
mod mounts;
pub mod registry;
pub mod remote_cache;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufReader, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use strata_frontend::{
    Args, BuildInputs, Diagnostic, Dockerfile, GlobalScope, Graph, Instruction, Stage, StageScope,
    env_get, env_set,
};
use strata_oci::Digest;
use strata_oci::compress::Compression;
use strata_oci::image::{HealthConfig, ImageConfig};
use strata_store::{CacheRecord, ImageRecord, LayerRecord, Store, WriteLock};

pub use checks::check;
pub use export::{Output, OutputKind, check_outputs, parse_output};

/// Everything wrong with a build, each naming what the user must fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{}", .0.render())]
    Dockerfile(Box<Diagnostic>),
    #[error(
        "process \"{command}\" did not complete successfully: exit code: {code}\n  at {file}:{line}: {instruction}"
    )]
    StepFailed {
        file: String,
        line: usize,
        instruction: String,
        command: String,
        code: i32,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] strata_store::StoreError),
    #[error(transparent)]
    Exec(#[from] strata_exec::ExecError),
    #[error("{0}")]
    Other(String),
    /// Another stage failed first; this one stopped.
    #[error("cancelled because another stage failed")]
    Cancelled,
}

type Result<T, E = BuildError> = std::result::Result<T, E>;

fn other(msg: impl Into<String>) -> BuildError {
    BuildError::Other(msg.into())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// What `strata build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile's name for messages, and its contents.
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps always run.
    pub no_cache_filter: Vec<String>,
    pub outputs: Vec<Output>,
    pub network: strata_exec::Network,
    pub labels: BTreeMap<String, String>,
    /// `--timestamp=now`: wall-clock dates instead of the build epoch.
    pub timestamp_now: bool,
    /// `--secret id=X,...` values, by id, for `RUN --mount=type=secret`.
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// `--ssh default`: the agent socket for `RUN --mount=type=ssh`.
    pub ssh_socket: Option<PathBuf>,
    /// `--pull`: fetch every base image again (once per build) even when
    /// the store has it.
    pub pull: bool,
    /// The registry client for images the store lacks; `None` means
    /// offline: such images are an error.
    pub registry: Option<std::sync::Arc<strata_registry::Client>>,
    /// `--cache-from`: shared caches to take step results from.
    pub cache_from: Vec<remote_cache::CacheLocation>,
    /// `--cache-to`: where to write this build's step results.
    pub cache_to: Vec<remote_cache::CacheExport>,
    /// Stages run at once (`--jobs`); 0 means one per core.
    pub jobs: usize,
    /// `--add-host NAME:IP`: extra /etc/hosts lines for RUN steps.
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// `--shm-size`: size of /dev/shm in RUN steps (default 64 MiB).
    pub shm_size: Option<u64>,
    /// `--platform A,B`: build once per platform; empty means the host.
    pub platforms: Vec<strata_frontend::Platform>,
}

/// Progress, for the CLI to render.
#[derive(Debug, Clone)]
pub enum Event {
    /// A step starts: `#n [stage i/k] TEXT`.
    Step {
        n: usize,
        name: String,
    },
    Cached {
        n: usize,
    },
    Output {
        n: usize,
        data: Vec<u8>,
    },
    Done {
        n: usize,
        seconds: f64,
    },
    Error {
        n: usize,
        message: String,
    },
    /// A build check fired (BuildKit's lint rules); the CLI lists these
    /// after the build, as buildx does.
    Warning(strata_frontend::lint::Warning),
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub image_id: Digest,
    pub manifest_digest: Digest,
    pub size: u64,
    pub layers_built: usize,
    pub steps_cached: usize,
    pub steps_run: usize,
    pub epoch: i64,
    pub epoch_source: &'static str,
    /// Context files whose content was read and hashed (the others were
    /// known unchanged from an earlier build).
    pub context_files_hashed: usize,
    /// Each platform built: (`os/arch[/variant]`, image ID, manifest digest).
    pub platforms: Vec<(String, Digest, Digest)>,
    /// Progress step numbers used (the next platform's steps continue).
    pub steps_numbered: usize,
}

/// The image state after a step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    layers: Vec<LayerRecord>,
    config: ImageConfig,
    key: String,
    base_image: Option<Digest>,
    /// The stage whose steps advance this state.
    #[serde(skip)]
    stage: usize,
    /// Whether this stage has set CMD: ENTRYPOINT then keeps it, and resets
    /// only a CMD inherited from the base (BuildKit's `cmdSet`).
    #[serde(skip)]
    cmd_set: bool,
}

/// The cached outcome of one step.
#[derive(Serialize, Deserialize)]
struct CachedStep {
    layer: Option<LayerRecord>,
    config: ImageConfig,
}

/// Mixed into every base key: bump it when a step's semantics change, so
/// results cached by an older strata are never reused.
const CACHE_VERSION: &[u8] = b"strata-cache-v2";

use strata_frontend::DEFAULT_PATH;

/// Where a RUN heredoc script (`#!`) is mounted; its mount point, like every
/// RUN mount's, never reaches the step's layer.
const PIPES: &str = "/.strata-pipes";

/// One build's shared state. Stages run on their own threads, so everything
/// that changes during a build sits behind a lock or is atomic; a stage's own
/// image state (`State`) is owned by its thread.
struct Solver<'a> {
    store: &'a Store,
    lock: &'a WriteLock,
    opts: &'a BuildOptions,
    df: Dockerfile,
    /// Build args and platforms, as ARGs see them.
    inputs: BuildInputs,
    /// The predefined platform ARGs and the ARGs before the first FROM.
    global: GlobalScope,
    stages: Vec<Stage>,
    graph: Graph,
    events: Mutex<&'a mut (dyn FnMut(Event) + Send)>,
    epoch: i64,
    created: String,
    step_no: AtomicUsize,
    built: AtomicUsize,
    cached: AtomicUsize,
    run: AtomicUsize,
    /// Finished stages, by index; `stage_done` is signalled on each insert.
    done: Mutex<HashMap<usize, State>>,
    stage_done: Condvar,
    /// Set by the first failure: stages not started do not start, running
    /// ones stop before their next instruction.
    cancelled: std::sync::Arc<AtomicBool>,
    /// Merged root filesystems of stages/images used by COPY --from.
    rootfs: Mutex<HashMap<String, tempfile::TempDir>>,
    ignore: context::Ignore,
    /// Content hashes of context files from earlier builds.
    hash_cache: context::HashCache,
    /// Stage indexes named by `--no-cache-filter`.
    no_cache_stages: Vec<usize>,
    /// Images already pulled in this build (`--pull` pulls each once).
    pulled: Mutex<HashMap<String, ImageRecord>>,
    /// Step results from `--cache-from`.
    imported: Mutex<remote_cache::ImportedCache>,
    /// Held while layers are unpacked into snapshots, so that two stages on
    /// the same base never unpack into the same directory at once.
    unpacking: Mutex<()>,
    /// Every step key this build ended with, by stage (for `--cache-to`).
    step_keys: Mutex<Vec<(usize, String)>>,
    /// Put before stage labels in progress (`linux/arm64 `) when a build
    /// makes several platforms; else empty.
    label: String,
}

/// The build epoch and where it came from: SOURCE_DATE_EPOCH (env or build
/// arg), else the commit time of HEAD when the context is a git work tree,
/// else 0.
pub fn build_epoch(context: &Path, build_args: &BTreeMap<String, String>) -> (i64, &'static str) {
    if let Some(v) = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        && let Ok(n) = v.trim().parse::<i64>()
    {
        return (n, "SOURCE_DATE_EPOCH");
    }
    let git = std::process::Command::new("git")
        .args(["-C"])
        .arg(context)
        .args(["log", "-1", "--format=%ct"])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = git
        && out.status.success()
        && let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>()
    {
        return (n, "git HEAD commit time");
    }
    (0, "default (no SOURCE_DATE_EPOCH, no git)")
}

/// Unpacks `layers` into the store's snapshots (each layer once, ever) and
/// returns them as overlay lowerdirs, top-most first. Shared by builds and
/// `strata run`.
pub fn lowers(store: &Store, lock: &WriteLock, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
    let mut lowers = Vec::new();
    for l in layers {
        let dir = store.snapshot_dir(&l.diff_id);
        if !store.snapshot_ready(&l.diff_id)? {
            if dir.exists() {
                strata_exec::snapshot::remove_tree(&dir)?;
            }
            let reader = store.open_layer_tar(l)?;
            strata_exec::snapshot::unpack_layer(reader, &dir, strata_exec::Mode::current())?;
            store.snapshot_done(lock, &l.diff_id)?;
        }
        lowers.push(dir);
    }
    lowers.reverse();
    Ok(lowers)
}

/// The resolved plan of a build as text (`strata build --print`), without
/// running anything: base images' ENV comes from the store when it has
/// them (nothing is pulled).
pub fn plan(store: &Store, opts: &BuildOptions) -> Result<String> {
    let dockerfile = |d: Diagnostic| BuildError::Dockerfile(Box::new(d));
    let df = strata_frontend::parse(&opts.dockerfile, &opts.dockerfile_name).map_err(dockerfile)?;
    let inputs = BuildInputs::host(opts.build_args.clone());
    let (global, stages) = strata_frontend::stages(&df, &inputs).map_err(dockerfile)?;
    let graph = strata_frontend::graph(&df, &stages, opts.target.as_deref()).map_err(|d| {
        if d.source_line.is_empty() {
            other(d.message)
        } else {
            dockerfile(d)
        }
    })?;
    let base_env = |name: &str| -> Option<Vec<String>> {
        let img = store.resolve(name).ok()?;
        let raw = store.read_blob(&img.id).ok()?;
        let config = ImageConfig::from_json(&raw).ok()?;
        Some(
            config
                .config
                .env
                .unwrap_or_else(|| vec![DEFAULT_PATH.to_owned()]),
        )
    };
    strata_frontend::render_plan(&df, &global, &stages, &graph, &inputs, &base_env)
        .map_err(dockerfile)
}

/// Runs a build into `store` and the requested outputs: once per platform
/// of `opts.platforms` (the host when empty), each with its own TARGET*
/// ARGs, exported together (an OCI index for several platforms).
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<BuildResult> {
    let host = strata_frontend::Platform::host();
    let platforms = if opts.platforms.is_empty() {
        vec![host.clone()]
    } else {
        opts.platforms.clone()
    };
    for (i, p) in platforms.iter().enumerate() {
        if p.os != "linux" {
            return Err(other(format!(
                "--platform {p}: only linux images can be built"
            )));
        }
        if platforms[..i].contains(p) {
            return Err(other(format!("--platform {p} is given twice")));
        }
    }
    export::check_outputs(&opts.outputs, platforms.len())?;
    if platforms.len() > 1 && !opts.cache_to.is_empty() {
        return Err(other(
            "--cache-to with several platforms is not supported yet; build one --platform at a time to export its cache",
        ));
    }
    // The checks run before anything is built, as in the reference's
    // frontend: their warnings go out as events, `error=true` stops here.
    let report = checks::run(
        store,
        opts,
        strata_frontend::lint::Scope::Build,
        &platforms[0],
    )?;
    for w in &report.warnings {
        events(Event::Warning(w.clone()));
    }
    if let Some(e) = report.error.filter(|e| e.from_checks) {
        return Err(other(e.message));
    }
    let (epoch, epoch_source) = build_epoch(&opts.context, &opts.build_args);
    let lock = store.lock()?;
    let tags = opts
        .tags
        .iter()
        .map(|t| strata_store::normalize_reference(t))
        .collect::<Result<Vec<_>, _>>()?;
    // With several platforms the store's names (one image per name) go to
    // the host platform's image when it is built; the others are stored
    // unnamed and reach users through the outputs.
    let named = if platforms.len() == 1 {
        Some(&platforms[0])
    } else {
        platforms.iter().find(|p| **p == host)
    };
    let mut images = Vec::new();
    let mut result: Option<BuildResult> = None;
    for p in &platforms {
        let inputs = BuildInputs {
            build_args: opts.build_args.clone(),
            build_platform: host.clone(),
            target_platform: p.clone(),
        };
        let is_named = named == Some(p);
        let store_tags: &[String] = if is_named { &tags } else { &[] };
        let label = if platforms.len() > 1 {
            format!("{p} ")
        } else {
            String::new()
        };
        let first_step = result
            .as_ref()
            .map_or(0, |r: &BuildResult| r.steps_numbered);
        let (image, stats) = build_platform(
            store,
            &lock,
            opts,
            PlatformBuild {
                inputs,
                tags: store_tags,
                label,
                first_step,
            },
            epoch,
            events,
        )?;
        let r = result.get_or_insert(BuildResult {
            image_id: image.id,
            manifest_digest: image.manifest,
            size: image.size(),
            layers_built: 0,
            steps_cached: 0,
            steps_run: 0,
            epoch,
            epoch_source,
            context_files_hashed: 0,
            platforms: Vec::new(),
            steps_numbered: 0,
        });
        r.steps_numbered = stats.steps_numbered;
        if is_named {
            r.image_id = image.id;
            r.manifest_digest = image.manifest;
            r.size = image.size();
        }
        r.layers_built += stats.built;
        r.steps_cached += stats.cached;
        r.steps_run += stats.run;
        r.context_files_hashed += stats.hashed;
        r.platforms.push((p.to_string(), image.id, image.manifest));
        images.push(export::PlatformImage {
            image,
            platform: strata_oci::image::Platform {
                architecture: p.arch.clone(),
                os: p.os.clone(),
                os_version: None,
                variant: Some(p.variant.clone()).filter(|v| !v.is_empty()),
            },
        });
    }
    for out in &opts.outputs {
        export::export(store, &lock, &images, &opts.tags, out, epoch)?;
    }
    result.ok_or_else(|| other("no platform was built"))
}

/// What differs between the builds of one `strata build` for each platform.
struct PlatformBuild<'a> {
    inputs: BuildInputs,
    /// The store names this platform's image gets.
    tags: &'a [String],
    /// Put before each step's stage label (`linux/arm64 `), or empty.
    label: String,
    /// Progress step numbers continue from here.
    first_step: usize,
}

/// Counts from one platform's build.
struct PlatformStats {
    built: usize,
    cached: usize,
    run: usize,
    hashed: usize,
    steps_numbered: usize,
}

/// One platform's build: the stages it needs, the image committed to the
/// store (named by `tags`), and `--cache-to`.
fn build_platform(
    store: &Store,
    lock: &WriteLock,
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
    let (target, needed) = (graph.target, graph.needed.clone());
    let created_secs = if opts.timestamp_now {
        strata_store::now_unix()
    } else {
        epoch
    };
    let ignore = context::Ignore::load(&opts.context, &opts.dockerfile_name)?;
    let solver = Solver {
        store,
        lock,
        opts,
        df,
        inputs,
        global,
        stages: stages.clone(),
        graph,
        events: Mutex::new(events),
        epoch,
        created: strata_store::rfc3339(created_secs),
        step_no: AtomicUsize::new(first_step),
        label,
        built: AtomicUsize::new(0),
        cached: AtomicUsize::new(0),
        run: AtomicUsize::new(0),
        done: Mutex::new(HashMap::new()),
        stage_done: Condvar::new(),
        cancelled: std::sync::Arc::new(AtomicBool::new(false)),
        rootfs: Mutex::new(HashMap::new()),
        ignore,
        hash_cache: context::HashCache::load(store, &opts.context)?,
        no_cache_stages: opts
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
            .collect::<Result<_>>()?,
        pulled: Mutex::new(HashMap::new()),
        imported: Mutex::new(remote_cache::ImportedCache::default()),
        unpacking: Mutex::new(()),
        step_keys: Mutex::new(Vec::new()),
    };
    if !opts.cache_from.is_empty() {
        solver.import_caches()?;
    }
    let ran = solver.run_stages(&stages, &needed, opts.jobs);
    // What was hashed is worth keeping even when a step failed.
    let context_files_hashed = solver.hash_cache.fresh_count();
    solver.hash_cache.save(store)?;
    let used: Vec<String> = solver
        .step_keys
        .lock()
        .expect("step keys")
        .iter()
        .map(|(_, k)| k.clone())
        .collect();
    store.cache_touch(lock, &used, strata_store::now_unix())?;
    ran?;
    let mut state = solver
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
        solver.built.load(Ordering::Relaxed),
        solver.cached.load(Ordering::Relaxed),
        solver.run.load(Ordering::Relaxed),
    );
    state.config.created = Some(solver.created.clone());
    let steps_numbered = solver.step_no.load(Ordering::Relaxed);
    let image = commit(store, lock, &state, tags)?;
    for dest in &opts.cache_to {
        let chain = base_chain(&stages, target);
        solver.export_cache(dest, &chain)?;
    }
    drop(solver);
    Ok((
        image,
        PlatformStats {
            built,
            cached,
            run,
            hashed: context_files_hashed,
            steps_numbered,
        },
    ))
}

/// Whether an image for `have` serves a build for `want`: same os and
/// architecture, and the same variant when `want` names one.
fn platform_fits(have: &strata_frontend::Platform, want: &strata_frontend::Platform) -> bool {
    have.os == want.os
        && have.arch == want.arch
        && (want.variant.is_empty() || have.variant == want.variant)
}

/// The target stage and the stages it is built FROM, transitively: the
/// stages whose steps make up the result image (`--cache-to mode=min`).
fn base_chain(stages: &[Stage], target: usize) -> std::collections::HashSet<usize> {
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

fn commit(store: &Store, lock: &WriteLock, state: &State, tags: &[String]) -> Result<ImageRecord> {
    let mut config = state.config.clone();
    config.rootfs.diff_ids = state.layers.iter().map(|l| l.diff_id).collect();
    let value = serde_json::from_slice(&config.to_json()).map_err(|e| other(e.to_string()))?;
    Ok(strata_store::write_image(
        store,
        lock,
        value,
        state.layers.clone(),
        state.base_image,
        tags,
    )?)
}

fn key_of(parts: &[&[u8]]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().to_hex().to_string()
}

impl Solver<'_> {
    fn next_step(&self) -> usize {
        self.step_no.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn emit(&self, e: Event) {
        // A panicking renderer poisons the lock; progress is then lost, not the build.
        if let Ok(mut f) = self.events.lock() {
            f(e);
        }
    }

    /// Runs the needed stages, each on its own thread as soon as the stages
    /// it depends on are done, at most `jobs` at once (0: one per core). The
    /// first failure cancels the rest: waiting stages never start, running
    /// ones stop before their next instruction; that failure is returned.
    fn run_stages(&self, stages: &[Stage], needed: &[usize], jobs: usize) -> Result<()> {
        let jobs = if jobs == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            jobs
        };
        let deps: HashMap<usize, Vec<usize>> = needed
            .iter()
            .map(|&i| (i, self.graph.stage_deps(i)))
            .collect();
        let running = Mutex::new(0usize);
        let slot_free = Condvar::new();
        let failure: Mutex<Option<BuildError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for &idx in needed {
                let deps = deps.get(&idx).cloned().unwrap_or_default();
                let (running, slot_free, failure) = (&running, &slot_free, &failure);
                s.spawn(move || {
                    // Wait for the stages this one reads.
                    {
                        let mut done = self.done.lock().expect("done map");
                        while !self.cancelled.load(Ordering::SeqCst)
                            && !deps.iter().all(|d| done.contains_key(d))
                        {
                            done = self.stage_done.wait(done).expect("done map");
                        }
                    }
                    // Then for a job slot.
                    {
                        let mut n = running.lock().expect("job slots");
                        while *n >= jobs && !self.cancelled.load(Ordering::SeqCst) {
                            n = slot_free.wait(n).expect("job slots");
                        }
                        *n += 1;
                    }
                    let result = if self.cancelled.load(Ordering::SeqCst) {
                        Err(BuildError::Cancelled)
                    } else {
                        self.stage(&stages[idx], stages)
                    };
                    *running.lock().expect("job slots") -= 1;
                    slot_free.notify_all();
                    match result {
                        Ok(state) => {
                            self.done.lock().expect("done map").insert(idx, state);
                        }
                        Err(BuildError::Cancelled) => {}
                        Err(e) => {
                            failure.lock().expect("failure").get_or_insert(e);
                            self.cancelled.store(true, Ordering::SeqCst);
                            slot_free.notify_all();
                        }
                    }
                    self.stage_done.notify_all();
                });
            }
        });
        match failure.into_inner().expect("failure") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&self, ins: &Instruction, msg: &str) -> BuildError {
        BuildError::Dockerfile(Box::new(self.df.error(ins, msg)))
    }

    /// An image by name for FROM or `--from`: from the store, else (or with
    /// `--pull`, once per build) from its registry.
    fn image(
        &self,
        name: &str,
        ins: &Instruction,
        want: &strata_frontend::Platform,
    ) -> Result<ImageRecord> {
        // Held throughout: two stages pulling the same image at once would
        // write the same download file.
        let mut pulled_map = self.pulled.lock().expect("pulled map");
        let key = format!("{name} {want}");
        if let Some(img) = pulled_map.get(&key) {
            return Ok(img.clone());
        }
        // The host's platform is what names in the store stand for; another
        // platform's image is pulled unnamed, so it is used from the store
        // only when the name happens to be stored for that platform.
        let foreign = *want != self.inputs.build_platform;
        let local = self.store.resolve(name);
        let stored_platform = match &local {
            Ok(img) if foreign => Some(self.platform_of(img)?),
            _ => None,
        };
        let local_fits = stored_platform
            .as_ref()
            .is_none_or(|p| platform_fits(p, want));
        if !self.opts.pull
            && local_fits
            && let Ok(img) = &local
        {
            return Ok(img.clone());
        }
        let stored_note = stored_platform
            .as_ref()
            .map(|p| format!("; the store has it for {p}, not {want}"))
            .unwrap_or_default();
        let Some(client) = self.opts.registry.clone() else {
            return Err(self.fail(
                ins,
                &match &local {
                    Ok(_) => format!("image {name:?} is needed for {want}{stored_note}, and pulling is off"),
                    Err(e) => format!("image {name:?} is not in the local store ({e}) and pulling is off; load it with `strata load`, `strata import` or `strata pull`"),
                },
            ));
        };
        let reference = match strata_oci::reference::Reference::parse(name) {
            Ok(r) => r,
            // Not a reference (an image ID, say): only the store can have it.
            Err(e) => {
                return match local {
                    Ok(img) if local_fits => Ok(img),
                    _ => Err(self.fail(ins, &format!("{e}{stored_note}"))),
                };
            }
        };
        let n = self.next_step();
        self.emit(Event::Step {
            n,
            name: if foreign {
                format!("[internal] pull {reference} for {want}")
            } else {
                format!("[internal] pull {reference}")
            },
        });
        let start = std::time::Instant::now();
        let pulled = if foreign {
            let platform = strata_oci::image::Platform {
                architecture: want.arch.clone(),
                os: want.os.clone(),
                os_version: None,
                variant: Some(want.variant.clone()).filter(|v| !v.is_empty()),
            };
            registry::pull_unnamed(
                self.store,
                self.lock,
                &client,
                &reference,
                &platform,
                &|_| {},
            )
        } else {
            let platform = strata_registry::host_platform();
            registry::pull(
                self.store,
                self.lock,
                &client,
                &reference,
                &platform,
                &|_| {},
            )
        }
        .map_err(|e| {
            self.emit(Event::Error {
                n,
                message: e.to_string(),
            });
            let whom = if foreign {
                format!("{name} for {want}")
            } else {
                name.to_owned()
            };
            self.fail(ins, &format!("pulling {whom}: {e}{stored_note}"))
        })?;
        self.emit(Event::Output {
            n,
            data: format!("resolved {} to {}\n", reference, pulled.digest).into_bytes(),
        });
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        pulled_map.insert(key, pulled.image.clone());
        Ok(pulled.image)
    }

    /// The platform an image's config says it is for.
    fn platform_of(&self, img: &ImageRecord) -> Result<strata_frontend::Platform> {
        let raw = self.store.read_blob(&img.id)?;
        let config = ImageConfig::from_json(&raw)
            .map_err(|e| other(format!("config of image {}: {e}", img.id)))?;
        Ok(strata_frontend::Platform {
            os: config.os,
            arch: config.architecture,
            variant: config.variant.unwrap_or_default(),
        })
    }

    fn stage(&self, stage: &Stage, all: &[Stage]) -> Result<State> {
        let n = self.next_step();
        let pl = &self.label;
        let first_label = |total: usize| match &stage.name {
            Some(name) => format!("[{pl}{name} 1/{total}]"),
            None => format!("[{pl}stage-{} 1/{total}]", stage.index),
        };
        self.emit(Event::Step {
            n,
            name: format!(
                "{} FROM {}",
                first_label(stage.instructions.len() + 1),
                stage.base
            ),
        });
        let start = Instant::now();
        let mut state = self.base(stage, all)?;
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        // The base's ONBUILD triggers run first, as if written right after
        // FROM, and are not passed on to images built from this one.
        let triggers = self.onbuild_triggers(stage, &mut state)?;
        let steps: Vec<(&Instruction, bool)> = triggers
            .iter()
            .map(|i| (i, true))
            .chain(stage.instructions.iter().map(|i| (i, false)))
            .collect();
        let total = steps.len() + 1;
        let label = |i: usize| match &stage.name {
            Some(n) => format!("[{pl}{n} {i}/{total}]"),
            None => format!("[{pl}stage-{} {i}/{total}]", stage.index),
        };
        let mut args = StageScope::new();
        for (i, (ins, trigger)) in steps.into_iter().enumerate() {
            if self.cancelled.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            let n = self.next_step();
            let name = format!(
                "{} {}{} {}",
                label(i + 2),
                if trigger { "ONBUILD " } else { "" },
                ins.keyword.to_uppercase(),
                ins.text
            );
            self.emit(Event::Step { n, name });
            let start = Instant::now();
            let r = self.instruction(n, ins, &mut state, &mut args);
            match r {
                Ok(cached) => {
                    if cached {
                        self.emit(Event::Cached { n });
                    } else {
                        self.emit(Event::Done {
                            n,
                            seconds: start.elapsed().as_secs_f64(),
                        });
                    }
                }
                Err(e) => {
                    self.emit(Event::Error {
                        n,
                        message: e.to_string(),
                    });
                    return Err(e);
                }
            }
        }
        Ok(state)
    }

    /// Takes the base image's ONBUILD triggers out of `state` and parses them
    /// as instructions placed on the FROM line (where errors point).
    fn onbuild_triggers(&self, stage: &Stage, state: &mut State) -> Result<Vec<Instruction>> {
        let Some(texts) = state
            .config
            .config
            .on_build
            .take()
            .filter(|t| !t.is_empty())
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for text in texts {
            let parsed =
                strata_frontend::parse(&format!("{text}\n"), &self.df.file).map_err(|d| {
                    self.fail(
                        &stage.from,
                        &format!("ONBUILD trigger {text:?} of the base image: {}", d.message),
                    )
                })?;
            for mut ins in parsed.instructions {
                if matches!(ins.keyword.as_str(), "onbuild" | "from" | "maintainer") {
                    return Err(self.fail(
                        &stage.from,
                        &format!(
                            "{} is not allowed as an ONBUILD trigger",
                            ins.keyword.to_uppercase()
                        ),
                    ));
                }
                ins.line = stage.from.line;
                ins.end_line = stage.from.end_line;
                out.push(ins);
            }
        }
        Ok(out)
    }

    /// The platform a stage builds for: its `FROM --platform`, else the
    /// build's target.
    fn stage_platform(&self, stage: &Stage) -> strata_frontend::Platform {
        stage
            .platform
            .clone()
            .unwrap_or_else(|| self.inputs.target_platform.clone())
    }

    fn base(&self, stage: &Stage, all: &[Stage]) -> Result<State> {
        if stage.base == "scratch" {
            let p = self.stage_platform(stage);
            let mut config = ImageConfig::new(&p.os, &p.arch);
            config.variant = Some(p.variant.clone()).filter(|v| !v.is_empty());
            config.config.env = Some(vec![DEFAULT_PATH.into()]);
            // The platform is in the key: the same steps on an empty base
            // make a different image config for each platform.
            return Ok(State {
                layers: Vec::new(),
                config,
                key: key_of(&[CACHE_VERSION, b"scratch", p.to_string().as_bytes()]),
                base_image: None,
                stage: stage.index,
                cmd_set: false,
            });
        }
        let lower = stage.base.to_lowercase();
        if let Some(s) = all
            .iter()
            .find(|s| s.index < stage.index && s.name.as_deref() == Some(lower.as_str()))
        {
            let mut st = self
                .done
                .lock()
                .expect("done map")
                .get(&s.index)
                .cloned()
                .ok_or_else(|| other(format!("stage {} was not built", stage.base)))?;
            st.stage = stage.index;
            st.cmd_set = false;
            return Ok(st);
        }
        let wanted = self.stage_platform(stage);
        let img = self.image(&stage.base, &stage.from, &wanted)?;
        let raw = self.store.read_blob(&img.id)?;
        let mut config = ImageConfig::from_json(&raw)
            .map_err(|e| other(format!("config of {}: {e}", stage.base)))?;
        if config.config.env.is_none() {
            config.config.env = Some(vec![DEFAULT_PATH.into()]);
        }
        Ok(State {
            layers: img.layers.clone(),
            config,
            key: key_of(&[CACHE_VERSION, b"image", img.id.to_string().as_bytes()]),
            base_image: Some(img.id),
            stage: stage.index,
            cmd_set: false,
        })
    }

    /// Runs one instruction; returns whether it was a cache hit.
    fn instruction(
        &self,
        n: usize,
        ins: &Instruction,
        state: &mut State,
        args: &mut StageScope,
    ) -> Result<bool> {
        let env = state.config.config.env.clone().unwrap_or_default();
        let escape = self.df.escape;
        // Expansion sees ENV first (ENV beats ARG of the same name), then ARGs.
        let lookup = |k: &str| env_get(&env, k).or_else(|| args.get(k));
        let expand = |w: &str| {
            strata_frontend::expand_word(w, &lookup, escape)
                .map_err(|e| self.fail(ins, &e.to_string()))
        };
        let words = |this: &Self| -> Result<Vec<String>> {
            match &ins.args {
                Args::Exec(v) => Ok(v.clone()),
                Args::Shell(s) => strata_frontend::split_words(s, &lookup, escape)
                    .map_err(|e| this.fail(ins, &e.to_string())),
            }
        };
        let cfg = &mut state.config.config;
        let history: String;
        let mut make_workdir: Option<(String, String)> = None;
        match ins.keyword.as_str() {
            "run" => return self.run_step(n, ins, state, args),
            "copy" | "add" => {
                let values: BTreeMap<String, String> = args.env().into_iter().collect();
                return self.copy_step(ins, state, &values);
            }
            "arg" => {
                let env_lookup = |k: &str| env_get(&env, k);
                history = args
                    .declare(ins, &self.global, &self.inputs, &env_lookup, escape)
                    .map_err(|e| self.fail(ins, &e.to_string()))?;
            }
            "env" => {
                let w = words(self)?;
                let mut e = cfg.env.clone().unwrap_or_default();
                let mut shown = Vec::new();
                if !w.first().is_some_and(|f| f.contains('=')) {
                    // Legacy `ENV key value with spaces`.
                    let (k, v) = ins
                        .text
                        .split_once(char::is_whitespace)
                        .unwrap_or((&ins.text, ""));
                    let v = expand(v.trim())?;
                    env_set(&mut e, k, &v);
                    shown.push(format!("{k}={v}"));
                } else {
                    for p in w {
                        let (k, v) = p.split_once('=').ok_or_else(|| {
                            self.fail(ins, &format!("ENV {p}: expected KEY=VALUE"))
                        })?;
                        env_set(&mut e, k, v);
                        shown.push(format!("{k}={v}"));
                    }
                }
                cfg.env = Some(e);
                history = format!("ENV {}", shown.join(" "));
            }
            "label" => {
                let w = words(self)?;
                let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
                let mut shown = Vec::new();
                for p in w {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| self.fail(ins, &format!("LABEL {p}: expected KEY=VALUE")))?;
                    labels.insert(k.to_owned(), v.to_owned());
                    shown.push(format!("{k}={v}"));
                }
                history = format!("LABEL {}", shown.join(" "));
            }
            "workdir" => {
                let w = expand(&ins.text)?;
                let cur = cfg
                    .working_dir
                    .clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "/".into());
                let joined = if w.starts_with('/') {
                    PathBuf::from(&w)
                } else {
                    Path::new(&cur).join(&w)
                };
                let clean = clean_abs(&joined);
                cfg.working_dir = Some(clean.clone());
                history = format!("WORKDIR {clean}");
                make_workdir = Some((clean, cfg.user.clone().unwrap_or_default()));
            }
            "user" => {
                let u = expand(&ins.text)?;
                cfg.user = Some(u.clone());
                history = format!("USER {u}");
            }
            "cmd" | "entrypoint" => {
                let v = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) => {
                        let mut sh = cfg
                            .shell
                            .clone()
                            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                        sh.push(s.clone());
                        sh
                    }
                };
                history = format!(
                    "{} {}",
                    ins.keyword.to_uppercase(),
                    serde_json::to_string(&v).unwrap_or_default()
                );
                if ins.keyword == "cmd" {
                    cfg.cmd = Some(v);
                    state.cmd_set = true;
                } else {
                    cfg.entrypoint = Some(v);
                    // A new ENTRYPOINT resets the CMD inherited from the base,
                    // not one this stage set before it.
                    if !state.cmd_set {
                        cfg.cmd = None;
                    }
                }
            }
            "shell" => {
                let Args::Exec(v) = &ins.args else {
                    return Err(self.fail(ins, "SHELL requires the arguments to be in JSON form"));
                };
                cfg.shell = Some(v.clone());
                history = format!("SHELL {}", serde_json::to_string(v).unwrap_or_default());
            }
            "expose" => {
                let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in words(self)? {
                    for port in expose_ports(&p).map_err(|e| self.fail(ins, &e))? {
                        ports.insert(port, Default::default());
                    }
                }
                history = format!("EXPOSE {}", ins.text);
            }
            "volume" => {
                let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
                for v in words(self)? {
                    vols.insert(v, Default::default());
                }
                history = format!("VOLUME {}", ins.text);
            }
            "stopsignal" => {
                let s = expand(&ins.text)?;
                cfg.stop_signal = Some(s.clone());
                history = format!("STOPSIGNAL {s}");
            }
            "maintainer" => {
                state.config.author = Some(ins.text.clone());
                history = format!("MAINTAINER {}", ins.text);
            }
            "onbuild" => {
                cfg.on_build
                    .get_or_insert_with(Vec::new)
                    .push(ins.text.clone());
                history = format!("ONBUILD {}", ins.text);
            }
            "healthcheck" => {
                let text = ins.text.trim();
                let test = if text.eq_ignore_ascii_case("none") {
                    vec!["NONE".to_owned()]
                } else {
                    let cmd = text
                        .strip_prefix("CMD")
                        .or_else(|| text.strip_prefix("cmd"))
                        .map(str::trim)
                        .ok_or_else(|| {
                            self.fail(ins, "HEALTHCHECK must be NONE or CMD <command>")
                        })?;
                    match serde_json::from_str::<Vec<String>>(cmd) {
                        Ok(v) => std::iter::once("CMD".to_owned()).chain(v).collect(),
                        Err(_) => vec!["CMD-SHELL".to_owned(), cmd.to_owned()],
                    }
                };
                let dur = |name: &str| -> Result<i64> {
                    match ins.flag(name) {
                        None => Ok(0),
                        Some(v) => parse_duration_ns(v).ok_or_else(|| {
                            self.fail(
                                ins,
                                &format!("--{name}={v}: not a duration like 30s or 1m30s"),
                            )
                        }),
                    }
                };
                let retries = match ins.flag("retries") {
                    None => 0,
                    Some(v) => v
                        .parse()
                        .map_err(|_| self.fail(ins, &format!("--retries={v}: not a number")))?,
                };
                let hc = HealthConfig {
                    test,
                    interval: dur("interval")?,
                    timeout: dur("timeout")?,
                    start_period: dur("start-period")?,
                    start_interval: dur("start-interval")?,
                    retries,
                };
                state.config.config.healthcheck = Some(hc);
                history = format!("HEALTHCHECK {text}");
            }
            other_kw => {
                return Err(self.fail(
                    ins,
                    &format!("{} is not allowed here", other_kw.to_uppercase()),
                ));
            }
        }
        // WORKDIR creates a missing directory (and its missing parents) as a
        // layer, owned by the current USER, as BuildKit does; a cached step
        // like COPY, so a rebuild neither looks nor writes again.
        if let Some((dir, user)) = make_workdir {
            let key = key_of(&[state.key.as_bytes(), history.as_bytes(), user.as_bytes()]);
            if self.cache_hit(&key, state)? {
                return Ok(true);
            }
            let layer = self.workdir_layer(&dir, &user, state, ins)?;
            self.finish_step(&key, layer, state, history)?;
            return Ok(false);
        }
        state
            .config
            .push_step(None, Some(self.created.clone()), history.clone());
        state.key = key_of(&[state.key.as_bytes(), history.as_bytes()]);
        Ok(false)
    }

    /// The cache lookup shared by RUN and COPY: on a hit the state advances.
    /// The local cache first, then `--cache-from` sources (whose layer is
    /// fetched now, and the step recorded locally).
    fn cache_hit(&self, key: &str, state: &mut State) -> Result<bool> {
        if self.opts.no_cache || self.no_cache_stages.contains(&state.stage) {
            return Ok(false);
        }
        let local = self
            .store
            .cache_get(key)?
            .and_then(|rec| serde_json::from_value::<CachedStep>(rec.value).ok())
            .filter(|s| {
                s.layer
                    .as_ref()
                    .is_none_or(|l| self.store.has_blob(&l.blob))
            });
        let step = match local {
            Some(s) => s,
            None => {
                let Some(step) = self
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
                    let fetched = self.imported.lock().expect("imported cache").fetch_blob(
                        self.store,
                        self.lock,
                        client.as_deref(),
                        &l.blob,
                    );
                    if let Err(e) = fetched {
                        // A cache that cannot deliver is a miss, not a failure.
                        self.emit(Event::Output {
                            n: self.step_no.load(Ordering::Relaxed),
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
        self.cached.fetch_add(1, Ordering::Relaxed);
        self.step_keys
            .lock()
            .expect("step keys")
            .push((state.stage, key.to_owned()));
        Ok(true)
    }

    fn cache_store(&self, key: &str, layer: Option<&LayerRecord>, state: &State) -> Result<()> {
        let step = CachedStep {
            layer: layer.cloned(),
            config: state.config.clone(),
        };
        self.cache_record(key, &step)?;
        self.step_keys
            .lock()
            .expect("step keys")
            .push((state.stage, key.to_owned()));
        Ok(())
    }

    fn cache_record(&self, key: &str, step: &CachedStep) -> Result<()> {
        let value = serde_json::to_value(step).map_err(|e| other(e.to_string()))?;
        let rec = CacheRecord {
            value,
            diff_ids: step.layer.iter().map(|l| l.diff_id).collect(),
            blobs: step.layer.iter().map(|l| l.blob).collect(),
            last_used: strata_store::now_unix(),
        };
        self.store.cache_put(self.lock, key, &rec)?;
        Ok(())
    }

    /// Reads the `--cache-from` manifests (not their layers).
    fn import_caches(&self) -> Result<()> {
        let n = self.next_step();
        let names: Vec<String> = self
            .opts
            .cache_from
            .iter()
            .map(|c| match c {
                remote_cache::CacheLocation::Registry(r) => r.to_string(),
                remote_cache::CacheLocation::Local(d) => d.display().to_string(),
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
        let (imported, warnings) =
            remote_cache::ImportedCache::load(client.as_deref(), &self.opts.cache_from)?;
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
        *self.imported.lock().expect("imported cache") = imported;
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        Ok(())
    }

    /// Writes the steps of this build to a `--cache-to` destination.
    fn export_cache(
        &self,
        dest: &remote_cache::CacheExport,
        chain: &std::collections::HashSet<usize>,
    ) -> Result<()> {
        let n = self.next_step();
        let name = match &dest.location {
            remote_cache::CacheLocation::Registry(r) => r.to_string(),
            remote_cache::CacheLocation::Local(d) => d.display().to_string(),
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
        let step_keys = self.step_keys.lock().expect("step keys").clone();
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
        let digest = remote_cache::export(
            self.store,
            self.lock,
            client.as_deref(),
            &records,
            &dest.location,
        )?;
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

    /// Unpacks the state's layers into snapshots (once each); top-most first.
    fn lowers(&self, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
        let _one_at_a_time = self.unpacking.lock().expect("unpack lock");
        lowers(self.store, self.lock, layers)
    }

    /// Makes `dir` (an unpacked copy of layer `l`, on the store's
    /// filesystem) the snapshot of `l`, unless the store has one already.
    fn adopt_snapshot(&self, l: &LayerRecord, dir: &Path) -> Result<()> {
        if self.store.snapshot_ready(&l.diff_id)? {
            return Ok(());
        }
        let _one_at_a_time = self.unpacking.lock().expect("unpack lock");
        let dest = self.store.snapshot_dir(&l.diff_id);
        if dest.exists() {
            strata_exec::snapshot::remove_tree(&dest)?;
        }
        fs_err::rename(dir, &dest).map_err(|e| other(e.to_string()))?;
        self.store.snapshot_done(self.lock, &l.diff_id)?;
        Ok(())
    }

    fn scratch(&self) -> Result<tempfile::TempDir> {
        let dir = self.store.root().join("tmp");
        fs_err::create_dir_all(&dir).map_err(|e| other(e.to_string()))?;
        tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&dir)
            .map_err(io(format!("creating a scratch dir in {}", dir.display())))
    }

    /// Writes `changes` under `root` as a gzip layer into the store.
    fn write_layer(&self, root: &Path, changes: &[strata_oci::Change]) -> Result<LayerRecord> {
        let scratch = self.scratch()?;
        let path = scratch.path().join("layer");
        let mut file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| other(e.to_string()))?;
        let opts = strata_oci::layer::LayerOptions {
            compression: Compression::default(),
            epoch: Some(self.epoch),
            threads: 0,
            // Rootless, RUN leaves files owned by host sub-IDs; the layer
            // records the IDs the image sees.
            owners: strata_exec::idmap::IdMapping::current().owner_map(),
        };
        let info = strata_oci::layer::write_layer(root, changes, &opts, &mut file)
            .map_err(|e| other(format!("writing a layer: {e}")))?;
        file.rewind().map_err(|e| other(e.to_string()))?;
        let (digest, size) = self
            .store
            .put_blob_reader(self.lock, BufReader::new(file))?;
        if digest != info.digest {
            return Err(other(format!(
                "layer changed while being stored: {digest} != {}",
                info.digest
            )));
        }
        Ok(LayerRecord {
            diff_id: info.diff_id,
            blob: digest,
            media_type: info.media_type.to_string(),
            size,
            uncompressed_size: info.uncompressed_size,
        })
    }

    fn run_step(
        &self,
        n: usize,
        ins: &Instruction,
        state: &mut State,
        args: &StageScope,
    ) -> Result<bool> {
        let cfg = &state.config.config;
        let shell = cfg
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        // A lone heredoc that starts with `#!` is a script run by its own
        // interpreter: BuildKit mounts it read-only at /dev/pipes/NAME and
        // runs that path instead of handing the text to the shell. Our /dev
        // is a fresh tmpfs with no mount points of its own, so the script
        // sits in PIPES instead (only the script's `$0` tells).
        let mut script: Option<(String, String)> = None;
        let argv: Vec<String> = match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut text = s.clone();
                if let Some(h) = ins.heredocs.first() {
                    let marker_only = s
                        .trim()
                        .trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(|c| c == '"' || c == '\'')
                        == h.name;
                    if marker_only && h.content.starts_with("#!") {
                        script = Some((h.name.clone(), h.content.clone()));
                    }
                    text = if marker_only {
                        h.content.clone()
                    } else {
                        // The shell reads the heredoc itself, as BuildKit passes it.
                        let mut t = s.clone();
                        for h in &ins.heredocs {
                            t.push('\n');
                            t.push_str(&h.content);
                            t.push_str(&h.name);
                        }
                        t
                    };
                }
                match &script {
                    Some((name, _)) => vec![format!("{PIPES}/{name}")],
                    None => shell.iter().cloned().chain(std::iter::once(text)).collect(),
                }
            }
        };
        let mut env = cfg.env.clone().unwrap_or_default();
        let image_env = env.clone();
        // ARGs are visible to RUN (and to its cache key) but never persisted.
        for (k, v) in args.env() {
            if env_get(&env, &k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        let cwd = cfg
            .working_dir
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/".into());
        let user = cfg.user.clone().unwrap_or_default();
        let network = match ins.flag("network") {
            None | Some("default") => self.opts.network,
            Some("none") => strata_exec::Network::None,
            Some("host") => strata_exec::Network::Host,
            Some(o) => {
                return Err(self.fail(
                    ins,
                    &format!("--network={o}: expected default, none or host"),
                ));
            }
        };
        let mut mounts = self.run_mounts(ins, &cwd)?;
        // Kept until the step has run: the script's read-only mount source.
        let _pipes = match &script {
            Some((name, content)) => {
                use std::os::unix::fs::PermissionsExt as _;
                let dir = self.scratch()?;
                let file = dir.path().join(name);
                fs_err::write(&file, content).map_err(|e| other(e.to_string()))?;
                fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| other(e.to_string()))?;
                mounts
                    .key
                    .extend(format!("heredoc script {name}\0{content}\0").as_bytes());
                mounts.mounts.push(strata_exec::Mount::Bind {
                    target: PIPES.into(),
                    source: dir.path().to_owned(),
                    readwrite: false,
                });
                Some(dir)
            }
            None => None,
        };
        let argv_json = serde_json::to_vec(&argv).unwrap_or_default();
        let key = key_of(&[
            state.key.as_bytes(),
            b"RUN",
            &argv_json,
            env.join("\0").as_bytes(),
            cwd.as_bytes(),
            user.as_bytes(),
            format!("{network:?}").as_bytes(),
            &mounts.key,
            // What the step sees in /etc/hosts and /dev/shm can change its result.
            format!("{:?} {:?}", self.opts.extra_hosts, self.opts.shm_size).as_bytes(),
        ]);
        // `RUN |N K=V ... argv`, as the reference writes it; proxy build
        // args that no ARG declares are not in it.
        let prefix = args.history_prefix(&|k| env_get(&image_env, k));
        let history = if prefix.is_empty() {
            format!("RUN {} # buildkit", argv.join(" "))
        } else {
            format!("RUN {prefix} {} # buildkit", argv.join(" "))
        };
        if self.cache_hit(&key, state)? {
            return Ok(true);
        }
        // Proxy build args reach the step without an ARG, in both cases, and
        // stay out of its cache key as in the reference (`ProxyEnv`).
        for p in self.inputs.proxy_env() {
            if let Some((k, _)) = p.split_once('=')
                && env_get(&env, k).is_none()
            {
                env.push(p);
            }
        }
        if let Some(why) = emulation::missing_emulator(&state.config) {
            return Err(self.fail(ins, &why));
        }
        let lowers = self.lowers(&state.layers)?;
        let scratch = self.scratch()?;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let spec = strata_exec::RunSpec {
            lowers,
            scratch_dir: scratch.path().to_owned(),
            argv: argv.clone(),
            env,
            cwd,
            user,
            hostname: "buildkitsandbox".into(),
            network,
            mounts: mounts.mounts,
            extra_hosts: self.opts.extra_hosts.clone(),
            shm_size: self.opts.shm_size,
            output: Box::new(move |_s, data| {
                let _ = tx.send(data.to_vec());
            }),
            // The first failing stage kills the steps running in the others.
            cancel: Some(self.cancelled.clone()),
            stdin: None,
            seccomp: true,
        };
        let outcome = std::thread::scope(|s| {
            let h = s.spawn(move || strata_exec::run(spec));
            for data in rx {
                self.emit(Event::Output { n, data });
            }
            h.join()
        })
        .map_err(|_| other("the executor thread panicked"))?
        .map_err(|e| match e {
            strata_exec::ExecError::Cancelled => BuildError::Cancelled,
            e => BuildError::Exec(e),
        })?;
        self.run.fetch_add(1, Ordering::Relaxed);
        let code = match outcome.status {
            strata_exec::ExitStatus::Code(0) => None,
            strata_exec::ExitStatus::Code(c) => Some(c),
            strata_exec::ExitStatus::Signal(s) => Some(128 + s),
        };
        if let Some(code) = code {
            return Err(BuildError::StepFailed {
                file: self.df.file.clone(),
                line: ins.line,
                instruction: format!("RUN {}", ins.text),
                command: argv.join(" "),
                code,
            });
        }
        let changes = outcome.upper.changes()?;
        let layer = if changes.is_empty() {
            None
        } else {
            Some(self.write_layer(outcome.upper.root(), &changes)?)
        };
        // The upperdir becomes the new layer's snapshot: the next step mounts
        // it as is, and its files are not deleted one by one now (on a disk
        // with online discard that is most of a big step's cost).
        match &layer {
            Some(l) if !self.store.snapshot_ready(&l.diff_id)? => {
                let _one_at_a_time = self.unpacking.lock().expect("unpack lock");
                let dir = self.store.snapshot_dir(&l.diff_id);
                if dir.exists() {
                    strata_exec::snapshot::remove_tree(&dir)?;
                }
                if outcome.upper.into_snapshot(&dir)? {
                    self.store.snapshot_done(self.lock, &l.diff_id)?;
                }
            }
            _ => drop(outcome),
        }
        self.finish_step(&key, layer, state, history)?;
        Ok(false)
    }

    fn finish_step(
        &self,
        key: &str,
        layer: Option<LayerRecord>,
        state: &mut State,
        history: String,
    ) -> Result<()> {
        if let Some(l) = &layer {
            state.layers.push(l.clone());
            self.built.fetch_add(1, Ordering::Relaxed);
        }
        state.config.push_step(
            layer.as_ref().map(|l| l.diff_id),
            Some(self.created.clone()),
            history,
        );
        state.key = key.to_owned();
        self.cache_store(key, layer.as_ref(), state)
    }
}

/// `/a/./b/../c` -> `/a/c`, always absolute.
/// An EXPOSE word as the ports it names, as docker's `nat.ParsePortSpecs`
/// reads it: `80` is `80/tcp`, and a range `8000-8002/udp` is each port.
fn expose_ports(word: &str) -> std::result::Result<Vec<String>, String> {
    let (port, proto) = match word.split_once('/') {
        Some((p, "")) => (p, "tcp"),
        Some((p, proto)) => (p, proto),
        None => (word, "tcp"),
    };
    let bad = || format!("invalid port {word:?}");
    let num = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(port)?, num(port)?),
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn clean_abs(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go-style durations as Docker accepts them: `30s`, `1m30s`, `500ms`, `2h`.
fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult: f64 = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total = total.checked_add((value * mult) as i64)?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("abc"), None);
        assert_eq!(parse_duration_ns(""), None);
    }

    #[test]
    fn expose_ranges_name_each_port() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002/udp").unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert!(expose_ports("http").is_err());
        assert!(expose_ports("9-8").is_err());
    }

    #[test]
    fn workdir_paths_are_cleaned() {
        assert_eq!(clean_abs(Path::new("/a/./b/../c")), "/a/c");
        assert_eq!(clean_abs(Path::new("/")), "/");
    }

    #[test]
    fn env_set_replaces() {
        let mut e = vec!["A=1".to_owned(), "B=2".to_owned()];
        env_set(&mut e, "A", "3");
        assert_eq!(e, vec!["B=2", "A=3"]);
        assert_eq!(env_get(&e, "A").as_deref(), Some("3"));
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        assert_ne!(key_of(&[b"ab", b"c"]), key_of(&[b"a", b"bc"]));
    }
}
