//! What a build is asked (`BuildOptions`), what it reports while it runs
//! (`Event`), and what it returns (`BuildResult`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_oci::Digest;

use crate::cache::spec as remote_cache;
use crate::export::Output;

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
    /// `--isolation`: how RUN steps are kept apart from the machine.
    pub isolation: strata_exec::Isolation,
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
    /// `--ulimit`: resource limits of RUN steps' processes (in their keys).
    pub ulimits: Vec<strata_exec::Ulimit>,
    /// `--platform A,B`: build once per platform; empty means the host.
    pub platforms: Vec<strata_frontend::Platform>,
    /// Set from outside (Ctrl-C) to stop the build: running RUN steps are
    /// killed and cleaned up, no new step starts, and [`crate::build`]
    /// returns [`crate::BuildError::Cancelled`]. `None`: not cancellable.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Named contexts (`--build-context NAME=VALUE`, bake's `contexts`),
    /// by name as [`named_context_name`] normalises it: `FROM NAME`, `COPY
    /// --from=NAME` and `RUN --mount=from=NAME` read the context instead of
    /// resolving NAME, and a stage named NAME is replaced by it (its
    /// instructions are not run), as BuildKit's dockerfile frontend does.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Attestations to make (`--provenance`, `--attest`).
    pub attestations: Attestations,
}

/// What a build attests about its images.
#[derive(Debug, Clone, Default)]
pub struct Attestations {
    /// SLSA provenance; `None` makes none (`--provenance=false`).
    pub provenance: Option<crate::provenance::ProvenanceRequest>,
    /// Where the build context came from, for the provenance.
    pub context_source: crate::provenance::ContextSource,
}

/// One platform's provenance predicate, made once per build; each output
/// wraps it in a statement about the manifest it writes.
#[derive(Debug, Clone)]
pub struct PlatformProvenance {
    pub platform: strata_oci::Platform,
    /// The image it describes (config digest).
    pub image: Digest,
    pub request: crate::provenance::ProvenanceRequest,
    /// The predicate's JSON.
    pub predicate: Vec<u8>,
    /// The same as a SLSA v0.2 predicate, the form buildx records in its
    /// metadata file (`buildx.build.provenance`) whatever the version.
    pub predicate_v02: Vec<u8>,
}

/// What a named context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// An image: a reference resolved as FROM resolves one (the store, else
    /// its registry; `docker-image://REF[@DIGEST]`), or a store image ID
    /// (bake's `target:OTHER`, an `oci-layout://` image the CLI loaded).
    /// `FROM NAME` takes its layers and config.
    Image(String),
    /// Files: a local directory, or a git checkout or http download the
    /// caller fetched. Its own `.dockerignore` applies and every file is
    /// owned by root, as in BuildKit's local sources; `FROM NAME` gives an
    /// image of one layer holding the files, with an empty config.
    Dir(PathBuf),
}

impl std::fmt::Display for NamedContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedContext::Image(image) => write!(f, "image {image}"),
            NamedContext::Dir(dir) => write!(f, "directory {}", dir.display()),
        }
    }
}

/// A named context's name as buildx and BuildKit's frontend compare it: a
/// reference's short form without `:latest` (`docker.io/library/alpine`,
/// `alpine:latest` and `alpine` are one name); `None` for a name that is not
/// a reference (BuildKit refuses those: "invalid context name").
pub fn named_context_name(name: &str) -> Option<String> {
    let r = strata_oci::reference::Reference::parse_name_only(name).ok()?;
    let short = r.familiar();
    Some(match short.strip_suffix(":latest") {
        Some(s) => s.to_owned(),
        None => short,
    })
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
    /// Work done outside any step (unpacking, indexing, hashing the
    /// context, writing layers, exporting), reported when it ends so that a
    /// build whose steps were all cached still says where its time went:
    /// `#n [internal] unpacking 3 layers` and its duration.
    Internal {
        n: usize,
        work: InternalWork,
        seconds: f64,
    },
    /// A build check fired (BuildKit's lint rules); the CLI lists these
    /// after the build, as buildx does.
    Warning(strata_frontend::lint::Warning),
}

/// What an [`Event::Internal`] was doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InternalWork {
    /// Layers unpacked from their tars (into snapshots, or into a scratch
    /// root for a `COPY --from` or `RUN --mount=from=` that runs).
    Unpacking { layers: usize },
    /// Layers whose content index was made from their tar (once per layer).
    Indexing { layers: usize },
    /// Context files read and hashed (the others were known unchanged).
    HashingContext { files: usize },
    /// A step's changes written as a layer.
    WritingLayer,
    /// An output written (`type=oci`, `type=docker`, ...).
    Exporting { output: String },
    /// Layers stored uncompressed, compressed because an output ships
    /// them (once per layer and encoding; kept for the next one).
    Compressing { layers: usize },
}

impl std::fmt::Display for InternalWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = |n: &usize| if *n == 1 { "" } else { "s" };
        match self {
            InternalWork::Unpacking { layers } => {
                write!(f, "unpacking {layers} layer{}", plural(layers))
            }
            InternalWork::Indexing { layers } => {
                write!(f, "indexing {layers} layer{}", plural(layers))
            }
            InternalWork::HashingContext { files } => {
                write!(f, "hashing {files} context file{}", plural(files))
            }
            InternalWork::WritingLayer => f.write_str("writing layer"),
            InternalWork::Exporting { output } => write!(f, "exporting to {output}"),
            InternalWork::Compressing { layers } => {
                write!(f, "compressing {layers} layer{}", plural(layers))
            }
        }
    }
}

/// What a finished build produced.
#[derive(Debug, Clone)]
pub struct BuildResult {
    pub image_id: Digest,
    /// The image's manifest as shipped (`push`, `save`, `-o type=oci`),
    /// when its layers have been compressed for shipping (by an output of
    /// this build or earlier); else the manifest of the image as stored,
    /// over its uncompressed layers. A build never compresses just to
    /// print this (`Store::ship` does, for whoever needs it).
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
    /// The provenance of each platform's image, when asked for.
    pub provenance: Vec<PlatformProvenance>,
}
