//! What a build is asked (`BuildOptions`), what it reports while it runs
//! (`Event`), and what it returns (`BuildResult`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_oci::Digest;

use crate::annotations::Annotations;
use crate::cache::spec as remote_cache;
use crate::error::{Result, other};

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
    /// `--cgroup-parent`: RUN steps' cgroups are made under this one (in
    /// their keys when set, as BuildKit's ExecOp `Meta.CgroupParent`).
    pub cgroup_parent: Option<strata_exec::CgroupParent>,
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
    pub provenance: Option<ProvenanceRequest>,
    /// Where the build context came from, for the provenance.
    pub context_source: ContextSource,
    /// An SBOM of each image (`--sbom`, `--attest type=sbom`); `None`
    /// makes none.
    pub sbom: Option<SbomRequest>,
}

/// `--attest type=sbom,...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbomRequest {
    /// `scan-stage=true`: the other stages the build ran get an SBOM too.
    pub scan_stage: bool,
}

/// The SBOM predicate type (an SPDX document).
pub const PREDICATE_SPDX: &str = "https://spdx.dev/Document";

/// One platform's SBOMs: the image's (`sbom`) first, then each scanned
/// stage's (`sbom-STAGE`), as BuildKit names and orders them.
#[derive(Debug, Clone)]
pub struct PlatformSbom {
    pub platform: strata_oci::Platform,
    /// (name, SPDX JSON).
    pub documents: Vec<(String, Vec<u8>)>,
}

/// One platform's provenance predicate, made once per build; each output
/// wraps it in a statement about the manifest it writes.
#[derive(Debug, Clone)]
pub struct PlatformProvenance {
    pub platform: strata_oci::Platform,
    /// The image it describes (config digest).
    pub image: Digest,
    pub request: ProvenanceRequest,
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
    /// Files a COPY read and copied into its layer, those it hard-linked,
    /// unchanged, from the previous snapshot of the same step, and those a
    /// `COPY --from` hard-linked from the source stage's snapshots.
    CopyingFiles {
        copied: usize,
        linked: usize,
        shared: usize,
    },
    /// An output written (`type=oci`, `type=docker`, ...).
    Exporting { output: String },
    /// Layers stored uncompressed, compressed because an output ships
    /// them (once per layer and encoding; kept for the next one).
    Compressing { layers: usize },
    /// SBOMs made (`--sbom`): the image's and the scanned stages'.
    GeneratingSbom { documents: usize },
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
            InternalWork::CopyingFiles {
                copied,
                linked,
                shared,
            } => {
                write!(f, "copying {copied} file{}", plural(copied))?;
                if *linked > 0 {
                    write!(f, ", linking {linked} unchanged")?;
                }
                if *shared > 0 {
                    write!(f, ", linking {shared} from the source's snapshots")?;
                }
                Ok(())
            }
            InternalWork::Exporting { output } => write!(f, "exporting to {output}"),
            InternalWork::Compressing { layers } => {
                write!(f, "compressing {layers} layer{}", plural(layers))
            }
            InternalWork::GeneratingSbom { documents } => {
                write!(f, "generating {documents} SBOM{}", plural(documents))
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
    /// The SBOMs of each platform's image, when asked for.
    pub sbom: Vec<PlatformSbom>,
    /// The index an OCI output (`-o type=oci`) wrote, when it wrote one
    /// (several platforms, or attestations): what buildx reports as the
    /// image digest of such a build (the last such output's).
    pub exported_index: Option<strata_oci::image::Descriptor>,
}

/// Where `strata build -o` sends the image (`parse_output` reads buildx's
/// syntax into it; the exporters in `export` write it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// Into the local store (always done; named by -t).
    Image,
    /// docker-archive tar (`docker load`).
    Docker,
    /// OCI image layout, as a tar or (`tar=false`) a folder.
    Oci { tar: bool },
    /// The final root filesystem as plain files.
    Local,
    /// The final root filesystem as one tar.
    Tar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: OutputKind,
    /// `-` is stdout.
    pub dest: Option<PathBuf>,
    /// `compression=` (and `compression-level=`): layers are re-encoded on
    /// export when they are stored otherwise (or always, with `force`).
    pub compression: Option<strata_oci::Compression>,
    /// `force-compression=true`
    pub force_compression: bool,
    /// `compression-level=` was given: layers already in the requested
    /// codec are re-encoded too (the level they were made with is unknown).
    pub explicit_level: bool,
    /// `annotation*.KEY=VALUE` options, and `--annotation`s (the CLI adds
    /// those to every output, as buildx does).
    pub annotations: Annotations,
}

/// The predicate types of the two SLSA versions.
pub const PREDICATE_SLSA02: &str = "https://slsa.dev/provenance/v0.2";
pub const PREDICATE_SLSA1: &str = "https://slsa.dev/provenance/v1";

/// How much provenance to record (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvenanceMode {
    /// Materials, dates, the frontend; no build argument values.
    Min,
    /// Also build arguments, labels and the Dockerfile.
    Max,
}

/// Which SLSA provenance predicate (`version=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlsaVersion {
    V02,
    V1,
}

/// A provenance attestation asked for (`--provenance`, `--attest
/// type=provenance,...`, or buildx's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenanceRequest {
    pub mode: ProvenanceMode,
    pub version: SlsaVersion,
    /// `builder-id=`: the predicate's builder ID (empty by default).
    pub builder_id: String,
    /// `reproducible=true`: recorded in the metadata.
    pub reproducible: bool,
    /// `inline-only=true`: only in outputs that carry attestations inline
    /// (images pushed, not files in a `local`/`tar` output); buildx's
    /// default provenance has it.
    pub inline_only: bool,
    /// `filename=`: the file a `local`/`tar` output gets it in.
    pub filename: String,
}

impl ProvenanceRequest {
    /// What buildx asks for when no `--provenance`/`--attest
    /// type=provenance` is given (`build/opt.go`: `mode=min,inline-only=true`).
    pub fn buildx_default() -> Self {
        ProvenanceRequest {
            mode: ProvenanceMode::Min,
            version: SlsaVersion::V02,
            builder_id: String::new(),
            reproducible: false,
            inline_only: true,
            filename: "provenance.json".into(),
        }
    }

    /// The attributes of `--attest type=provenance,...` (without `type=`),
    /// with BuildKit's defaults: `mode=max`, `version=v0.2`.
    pub fn from_attrs(attrs: &[(String, String)]) -> Result<Self> {
        let mut r = ProvenanceRequest {
            mode: ProvenanceMode::Max,
            inline_only: false,
            ..Self::buildx_default()
        };
        let bool_of = |k: &str, v: &str| match v {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(other(format!(
                "provenance attestation: {k}={v}: expected true or false"
            ))),
        };
        for (k, v) in attrs {
            match k.as_str() {
                "mode" => {
                    r.mode = match v.as_str() {
                        "min" => ProvenanceMode::Min,
                        "max" | "full" => ProvenanceMode::Max,
                        _ => return Err(other(format!("invalid mode {v:?}"))),
                    }
                }
                "version" => {
                    r.version = match v.as_str() {
                        "v0.2" => SlsaVersion::V02,
                        "v1" => SlsaVersion::V1,
                        _ => {
                            return Err(other(format!("invalid provenance SLSA version: {v}")));
                        }
                    }
                }
                "builder-id" => r.builder_id = v.clone(),
                "reproducible" => r.reproducible = bool_of(k, v)?,
                "inline-only" => r.inline_only = bool_of(k, v)?,
                "filename" => r.filename = v.clone(),
                // BuildKit samples resource usage into the predicate; strata
                // does not measure it, and says so rather than ignore it.
                "capture-usage" => {
                    return Err(other(
                        "provenance attestation: capture-usage is not supported by strata",
                    ));
                }
                _ => {
                    return Err(other(format!(
                        "provenance attestation: unknown attribute {k:?} (mode, version, builder-id, reproducible, inline-only, filename)"
                    )));
                }
            }
        }
        Ok(r)
    }

    /// The predicate type this request produces.
    pub fn predicate_type(&self) -> &'static str {
        match self.version {
            SlsaVersion::V02 => PREDICATE_SLSA02,
            SlsaVersion::V1 => PREDICATE_SLSA1,
        }
    }
}

/// Where the build context came from, for the predicate's config source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContextSource {
    /// A local directory (buildx sends it as the `context` local).
    #[default]
    Local,
    /// A git or http(s) URL (buildx's `context` frontend argument).
    Url(String),
}
