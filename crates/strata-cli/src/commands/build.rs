//! `strata build`: the `docker buildx build` command line over strata-build.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use strata_build::{BuildError, BuildOptions, Event, Output, OutputKind};

use super::build_context::{is_git_url, read_inputs};
use super::build_flags::{
    check_entitlements, parse_add_host, parse_binary_size, parse_platforms, read_secrets,
    warn_if_default_network_is_the_hosts,
};
use super::check::{CheckFlags, check_call, clean_path, run_check};
use crate::exit::UsageError;

mod load;
mod metadata;
mod summary;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Build context: a directory; a git URL (`https://host/repo.git#ref:subdir`, `git@...`); an http(s) URL of a tar archive or of a Dockerfile; or `-` to read a Dockerfile from stdin (no context)
    pub context: String,
    /// Name and optionally a tag (`name:tag`); repeatable
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: `PATH/Dockerfile`); `-` reads stdin
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Set a build-time variable (`KEY=VALUE`, or `KEY` to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Additional build context, as buildx (`NAME=VALUE`; repeatable): a
    /// directory, `docker-image://REF[@DIGEST]`,
    /// `oci-layout://PATH[:TAG][@DIGEST]`, a git URL, or an http(s) URL
    /// (one file named `context`). `FROM NAME`, `COPY --from=NAME` and
    /// `RUN --mount=from=NAME` read it, and it replaces a stage named NAME
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    pub build_contexts: Vec<String>,
    /// Do not use the cache when building the image
    #[arg(long)]
    pub no_cache: bool,
    /// Do not use the cache for the steps of these stages (name or index; repeatable or comma-separated)
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Output destination (`type=docker,dest=FILE`, `type=oci,dest=FILE`, `type=local,dest=DIR`, `type=tar,dest=FILE`, `type=image`)
    #[arg(short = 'o', long = "output")]
    pub outputs: Vec<String>,
    /// Networking mode for RUN instructions
    #[arg(long, value_enum, default_value_t = super::build_flags::NetworkMode::Default)]
    pub network: super::build_flags::NetworkMode,
    #[command(flatten)]
    pub isolation: super::build_flags::IsolationFlag,
    #[command(flatten)]
    pub cgroup_parent: super::cgroup_parent_flag::CgroupParentFlag,
    /// Set metadata for the image (`KEY=VALUE`)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Target platforms, comma-separated (`linux/amd64,linux/arm64`); one
    /// image per platform, exported together as an OCI index. RUN steps for
    /// a foreign platform need a registered binfmt_misc emulator
    #[arg(long)]
    pub platform: Option<String>,
    /// Progress output
    #[arg(long, value_enum, default_value_t = crate::progress::ProgressMode::Auto)]
    pub progress: crate::progress::ProgressMode,
    /// Suppress the build output and print the image ID on success
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to the file
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// `now` to stamp the image with the wall clock instead of the build epoch
    #[arg(long)]
    pub timestamp: Option<String>,
    /// Secret for `RUN --mount=type=secret`: `id=ID,src=FILE` or `id=ID,env=VAR`
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// SSH agent for `RUN --mount=type=ssh`: `default` (from $SSH_AUTH_SOCK) or `default=SOCKET`
    #[arg(long)]
    pub ssh: Option<String>,
    /// Add a custom host-to-IP mapping for RUN steps (`host:ip` or `host=ip`); repeatable
    #[arg(long = "add-host", value_name = "HOST:IP")]
    pub add_host: Vec<String>,
    /// Extra privileged entitlement, as buildx: `network.host` (granted
    /// anyway: strata is not a shared builder); `security.insecure` and
    /// `device` are refused (no privileged steps, no host devices)
    #[arg(long, value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
    /// Shorthand for `--attest=type=provenance`: `true` (mode=max),
    /// `false`, or attributes (`mode=min|max,version=v0.2|v1`). Without
    /// it, pushed images get `mode=min` provenance, as with buildx
    #[arg(long, value_name = "VALUE")]
    pub provenance: Option<String>,
    /// Shorthand for `--attest=type=sbom`: `true`, `false`, `scan-stage=true`
    /// (an SPDX document of the packages; strata scans, no `generator=`)
    #[arg(long, value_name = "VALUE")]
    pub sbom: Option<String>,
    /// Attestation parameters (`type=provenance,mode=max,version=v1`,
    /// `type=sbom,scan-stage=true`); repeatable
    #[arg(long = "attest", value_name = "SPEC")]
    pub attest: Vec<String>,
    /// Add an annotation to the image: `KEY=VALUE`, or
    /// `TYPE[,TYPE...]:KEY=VALUE` with types `manifest`,
    /// `manifest-descriptor`, `index`, `index-descriptor`, each optionally
    /// for one platform (`manifest[linux/arm64]`); repeatable
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    /// Resource limit of RUN steps, as buildx: `NAME=SOFT[:HARD]`
    /// (`nofile=1024:2048`; names as `docker run --ulimit`); repeatable
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<strata_exec::Ulimit>,
    /// Size of /dev/shm for RUN steps (`64m`, `1g`; default 64m)
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Stages to run at once (default: one per core)
    #[arg(short = 'j', long, default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Always pull base images again (once per build), even when the store has them
    #[arg(long)]
    pub pull: bool,
    /// External cache source: `type=registry,ref=REG/REPO:TAG`, `type=local,src=DIR`, or a bare reference; repeatable
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Cache export: `type=registry,ref=REG/REPO:TAG[,mode=min|max]` or `type=local,dest=DIR[,mode=min|max]`; repeatable
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Push the image to its registry after the build (each -t name); same as `-o type=registry`
    #[arg(long)]
    pub push: bool,
    /// Load the image into the Docker daemon after the build (`DOCKER_HOST`,
    /// else the docker CLI's current context), streamed into its API with no
    /// temporary file; shorthand for `-o type=docker` into the daemon
    #[arg(long)]
    pub load: bool,
    /// Print the resolved plan (stages, dependencies, parallel levels, stages
    /// pruned by --target, expanded instructions) to stdout and exit without
    /// building
    #[arg(long)]
    pub print: bool,
    /// Run the Dockerfile's build checks (BuildKit's lint rules) and exit
    /// without building: 1 when any fired, as buildx (`--call=check`)
    #[arg(long)]
    pub check: bool,
    /// What the build does, as buildx: `build` (default) or
    /// `check[,format=json][,ignorestatus=true]`
    #[arg(long, value_name = "FUNC")]
    pub call: Option<String>,
    /// Results format of --check: `text` (default) or `json` (the
    /// frontend's result.json, as `--call=check,format=json`)
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

/// Resolves `--isolation` once for the whole build; `auto` says what it
/// picked and why on the progress output (see
/// [`super::build_flags::resolve_isolation`]).
fn choose_isolation(
    requested: strata_exec::Isolation,
    progress: &crate::progress::Progress,
) -> Result<strata_exec::Isolation, UsageError> {
    let (isolation, picked) = super::build_flags::resolve_isolation(requested)?;
    if let Some(line) = picked
        && !progress.is_quiet()
        && progress.wants_summary()
    {
        #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
        {
            eprintln!("{line}");
        }
    }
    Ok(isolation)
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let (context, dockerfile_name, dockerfile, _fetched) =
        read_inputs(&args.context, args.file.as_deref(), &args.registry)?;
    let mut build_args = BTreeMap::new();
    for a in &args.build_args {
        match a.split_once('=') {
            Some((k, v)) => {
                build_args.insert(k.to_owned(), v.to_owned());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    build_args.insert(a.clone(), v);
                }
            }
        }
    }
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        labels.insert(k.to_owned(), v.to_owned());
    }
    let platforms = match &args.platform {
        None => Vec::new(),
        Some(list) => parse_platforms(list)?,
    };
    check_entitlements(&args.allow)?;
    let (provenance, sbom) = super::attest_flags::attestations(
        &args.attest,
        args.provenance.as_deref(),
        args.sbom.as_deref(),
    )?;
    let annotations = super::attest_flags::annotations(&args.annotations)?;
    let mut push_annotations = strata_build::annotations::Annotations(annotations.clone());
    let network = args.network.network();
    warn_if_default_network_is_the_hosts(network);
    let requested = args.isolation.requested()?;
    let timestamp_now = match args.timestamp.as_deref() {
        None => false,
        Some("now") => true,
        Some(o) => {
            return Err(UsageError(format!("--timestamp {o}: only `now` is accepted")).into());
        }
    };
    let mut outputs = Vec::new();
    let mut push_names: Vec<String> = Vec::new();
    let mut push = args.push;
    for o in &args.outputs {
        // `type=registry[,name=REF]` (or `type=image,push=true`) pushes after
        // the build; it is handled here, where the registry client lives.
        let fields: Vec<(&str, &str)> = o.split(',').filter_map(|f| f.split_once('=')).collect();
        let ty = fields.iter().find(|(k, _)| *k == "type").map(|(_, v)| *v);
        let push_flag = fields.iter().any(|(k, v)| *k == "push" && *v == "true");
        if ty == Some("registry") || (ty == Some("image") && push_flag) {
            push = true;
            for (k, v) in &fields {
                match *k {
                    "name" => push_names.extend(v.split(';').map(str::to_owned)),
                    "type" | "push" | "oci-mediatypes" => {}
                    other => match strata_build::annotations::parse_annotation_option(other, v)
                        .map_err(|e| UsageError(format!("--output {o:?}: {e}")))?
                    {
                        Some(a) => push_annotations.0.push(a),
                        None => {
                            return Err(UsageError(format!(
                                "--output {o:?}: unknown option {other:?} for type=registry"
                            ))
                            .into());
                        }
                    },
                }
            }
            continue;
        }
        let mut out = strata_build::parse_output(o).map_err(|e| UsageError(e.to_string()))?;
        // buildx gives every output the `--annotation`s; those without a
        // manifest (local, tar) have no use for them.
        if !matches!(out.kind, OutputKind::Local | OutputKind::Tar) {
            out.annotations.0.extend(annotations.iter().cloned());
        }
        outputs.push(out);
    }
    if args.load && !annotations.is_empty() {
        return Err(UsageError(
            "--annotation with --load: the image is loaded as stored, without annotations; use -o type=docker,dest=FILE or type=oci"
                .into(),
        )
        .into());
    }
    let mut tags = args.tags.clone();
    for n in &push_names {
        if !tags.contains(n) {
            tags.push(n.clone());
        }
    }
    strata_build::check_outputs(&outputs, platforms.len().max(1))
        .map_err(|e| UsageError(e.to_string()))?;
    if args.load && platforms.len() > 1 {
        // buildx's words for the same refusal.
        return Err(UsageError(format!("--load: {}", strata_build::DOCKER_MANIFEST_LISTS)).into());
    }
    // Resolved before the build so that a malformed DOCKER_HOST or an unknown
    // context fails at once; an unreachable daemon fails after the build,
    // leaving the image in the store.
    let load_endpoint = if args.load {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Some(
            crate::daemon::resolve_endpoint(&|k| std::env::var(k).ok(), home.as_deref())
                .map_err(|e| UsageError(format!("--load: {e:#}")))?,
        )
    } else {
        None
    };
    if push && tags.is_empty() {
        return Err(UsageError(
            "--push needs a name to push to: -t REGISTRY/REPO:TAG or -o type=registry,name=..."
                .into(),
        )
        .into());
    }
    let client = std::sync::Arc::new(args.registry.client(Default::default())?);
    let stdout_used = outputs
        .iter()
        .any(|o: &Output| o.dest.as_deref() == Some(std::path::Path::new("-")));
    if stdout_used && args.quiet {
        return Err(UsageError(
            "--quiet and an output to stdout (dest=-) cannot be combined".into(),
        )
        .into());
    }
    // Ctrl-C cancels: steps are killed and cleaned up, then "cancelled", 130.
    let cancel = strata_exec::interrupt::cancel_on_sigint()
        .map_err(|e| anyhow::anyhow!("installing the Ctrl-C handler: {e}"))?;
    let opts = BuildOptions {
        cancel: Some(cancel),
        context,
        dockerfile_name,
        dockerfile,
        tags: tags.clone(),
        build_args,
        target: args.target.clone(),
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        outputs: outputs.clone(),
        network,
        isolation: requested,
        labels,
        timestamp_now,
        secrets: read_secrets(&args.secrets)?,
        ssh_socket: match args.ssh.as_deref() {
            None => None,
            Some("default") => Some(PathBuf::from(
                std::env::var("SSH_AUTH_SOCK")
                    .map_err(|_| UsageError("--ssh default: SSH_AUTH_SOCK is not set".into()))?,
            )),
            Some(s) => Some(PathBuf::from(s.strip_prefix("default=").ok_or_else(
                || UsageError(format!("--ssh {s}: expected default or default=SOCKET")),
            )?)),
        },
        pull: args.pull,
        jobs: args.jobs,
        extra_hosts: args
            .add_host
            .iter()
            .map(|h| parse_add_host(h))
            .collect::<anyhow::Result<_>>()?,
        shm_size: match args.shm_size.as_deref() {
            None => None,
            Some(v) => Some(parse_binary_size(v).ok_or_else(|| {
                UsageError(format!("--shm-size {v}: expected a size such as 64m or 1g"))
            })?),
        },
        ulimits: args.ulimits.clone(),
        cgroup_parent: args.cgroup_parent.parsed()?,
        registry: Some(client.clone()),
        platforms,
        cache_from: args
            .cache_from
            .iter()
            .map(|c| strata_build::remote_cache::parse_cache_from(c))
            .collect::<Result<_, _>>()
            .map_err(|e| UsageError(e.to_string()))?,
        cache_to: args
            .cache_to
            .iter()
            .map(|c| strata_build::remote_cache::parse_cache_to(c))
            .collect::<Result<_, _>>()
            .map_err(|e| UsageError(e.to_string()))?,
        named_contexts: BTreeMap::new(),
        attestations: strata_build::Attestations {
            provenance,
            context_source: if args.context == "-"
                || !(is_git_url(&args.context)
                    || args.context.starts_with("http://")
                    || args.context.starts_with("https://"))
            {
                strata_build::provenance::ContextSource::Local
            } else {
                strata_build::provenance::ContextSource::Url(args.context.clone())
            },
            sbom,
        },
    };
    let check = check_call(&CheckFlags {
        check: args.check,
        call: args.call.as_deref(),
        format: args.format.as_deref(),
        rawjson: args.progress == crate::progress::ProgressMode::Rawjson,
        print: args.print,
    })?;
    let store = super::store::open_store()?;
    // Named contexts are fetched (git, http) and loaded (OCI layouts) before
    // `--print` and `--check` too, as a URL build context is. The build's
    // lease from here on: an `oci-layout://` context's image is held in it
    // from the moment it is loaded.
    let contexts = super::named_contexts::split_contexts(&args.build_contexts)?;
    let lease = store.lease("build")?;
    let (named_contexts, _fetched_contexts) = super::named_contexts::resolve_contexts(
        &contexts,
        std::path::Path::new("."),
        &super::named_contexts::Resolve {
            store: &store,
            lease: &lease,
            registry: &args.registry,
            platforms: &opts.platforms,
        },
    )?;
    let opts = BuildOptions {
        named_contexts,
        ..opts
    };
    if let Some(call) = check {
        // buildx names the Dockerfile in its excerpts by its path from the
        // working directory (`ctx/Dockerfile`), or `-f` as given.
        let local = !(args.context == "-"
            || is_git_url(&args.context)
            || args.context.starts_with("http://")
            || args.context.starts_with("https://"));
        let shown = match &args.file {
            None if local => clean_path(&format!("{}/Dockerfile", args.context)),
            _ => opts.dockerfile_name.clone(),
        };
        return run_check(&store, &opts, &call, &shown);
    }
    if args.print {
        return match strata_build::plan(&store, &opts) {
            Ok(text) => {
                std::io::stdout().write_all(text.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            Err(BuildError::Dockerfile(d)) => {
                #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
                {
                    eprintln!("error: {}", d.render());
                }
                Ok(ExitCode::from(crate::exit::EXIT_FAILURE))
            }
            Err(e) => Err(e.into()),
        };
    }
    let quiet = args.quiet || args.progress == crate::progress::ProgressMode::Quiet;
    let mut progress = crate::progress::Progress::new(args.progress, quiet);
    super::cgroup_parent_flag::check(opts.cgroup_parent.as_ref())?;
    let opts = BuildOptions {
        isolation: choose_isolation(requested, &progress)?,
        ..opts
    };
    let mut warnings = Vec::new();
    let result = strata_build::build_with_lease(&store, Some(&lease), &opts, &mut |e: Event| {
        if let Event::Warning(w) = &e {
            warnings.push(w.clone());
        }
        progress.event(e)
    });
    crate::progress::print_warnings(&warnings, &progress);
    let result = match result {
        Ok(r) => r,
        Err(_) if strata_exec::interrupt::interrupted() => {
            #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
            {
                eprintln!("cancelled");
            }
            return Ok(ExitCode::from(strata_exec::interrupt::EXIT_INTERRUPTED));
        }
        Err(BuildError::Dockerfile(d)) => {
            #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
            {
                eprintln!("error: {}", d.render());
            }
            return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
        }
        Err(e) => {
            // The whole chain: the cause (`No space left on device` and
            // its path) is what the user needs, not only the context.
            #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
            {
                eprintln!("ERROR: {}", strata_build::error_chain(&e));
            }
            return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
        }
    };
    let mut pushed = Vec::new();
    let mut pushed_top = None;
    if push {
        // An index (attestations, annotations) is made once for every tag.
        let upload =
            match super::build_pushed::registry_upload(&store, &result, &tags, &push_annotations) {
                Ok(u) => u,
                Err(e) => {
                    #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
                    {
                        eprintln!("ERROR: pushing: {e:#}");
                    }
                    return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
                }
            };
        for t in &tags {
            let done = match &upload {
                Some((u, _lease)) => super::registry::push_upload(&store, &client, u, t, quiet),
                None => super::registry::push_image(&store, &client, t, quiet),
            };
            match done {
                Ok(d) => {
                    pushed_top = upload
                        .as_ref()
                        .map(|(u, _)| super::build_pushed::PushedTop {
                            media_type: u.top_media_type.clone(),
                            digest: d,
                            size: u.top.len() as u64,
                        });
                    pushed.push((t.clone(), d));
                }
                Err(e) => {
                    #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
                    {
                        eprintln!("ERROR: pushing {t}: {e:#}");
                    }
                    return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
                }
            }
        }
    }
    // Without a push, an index an OCI output wrote is the build's top
    // document, as BuildKit's oci exporter reports it.
    let top_document = pushed_top.or_else(|| {
        result
            .exported_index
            .as_ref()
            .map(|d| super::build_pushed::PushedTop {
                media_type: d.media_type.clone(),
                digest: d.digest,
                size: d.size,
            })
    });
    if let Some(endpoint) = &load_endpoint
        && let Err(e) = load::load_into_daemon(&store, &result.image_id, &tags, endpoint, quiet)
    {
        #[expect(clippy::print_stderr, reason = "the CLI renders build errors")]
        {
            eprintln!(
                "ERROR: {e:#}\nThe image is in strata's store: {}",
                result.image_id
            );
        }
        return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
    }
    if let Some(p) = &args.iidfile {
        let id = super::build_pushed::image_id(
            &result.image_id,
            result.platforms.len(),
            top_document.as_ref(),
        );
        strata_oci::atomic_write_shared(p, id.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.metadata_file {
        metadata::write_metadata_file(
            p,
            &store,
            &result,
            &tags,
            &metadata::Pushed {
                tags: &pushed,
                top: top_document.as_ref(),
            },
            &warnings,
            &opts,
        )?;
    }
    if args.quiet {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{}", result.image_id)?;
    } else if !stdout_used && progress.wants_summary() {
        summary::print_summary(&store, &result, &tags, &mut progress, start)?;
    }
    Ok(ExitCode::SUCCESS)
}
