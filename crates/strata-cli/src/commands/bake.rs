//! `strata bake`: builds the targets of a bake file (`docker buildx bake`)
//! in one process: each target is a `strata_build` build with options
//! mapped from its keys, independent targets run in parallel (`--jobs`),
//! a `target:OTHER` context builds OTHER first, and steps the targets
//! share run once (strata-build's once-gate). Every target key is either
//! mapped or refused with an error naming it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context as _;
use strata_bake::{Entry, Resolved, Target};
use strata_build::{BuildOptions, BuildResult, Event};

use super::build_flags::{parse_add_host, parse_binary_size, parse_platforms, read_secrets};
use crate::exit::UsageError;

#[derive(clap::Args)]
pub struct BakeArgs {
    /// Targets or groups to build (default: the `default` group); `*`
    /// patterns match names
    pub targets: Vec<String>,
    /// Bake file (HCL, JSON or compose); repeatable, later files override
    /// earlier ones (default: compose.yaml, compose.yml,
    /// docker-compose.yml, docker-compose.yaml, docker-bake.json,
    /// docker-bake.hcl, docker-bake.override.json,
    /// docker-bake.override.hcl, each that exists)
    #[arg(short = 'f', long = "file")]
    pub files: Vec<String>,
    /// Print the resolved definition as JSON (buildx's `--print`) and exit
    #[arg(long)]
    pub print: bool,
    /// Override a target key: `TARGET.KEY=VALUE` (TARGET may be a `*`
    /// pattern; `KEY+=VALUE` appends to a list); repeatable
    #[arg(long = "set", value_name = "TARGET.KEY=VALUE")]
    pub set: Vec<String>,
    /// Do not use the cache for any target (`--set *.no-cache=true`)
    #[arg(long)]
    pub no_cache: bool,
    /// Always pull base images again (`--set *.pull=true`)
    #[arg(long)]
    pub pull: bool,
    /// Targets built at once (default: all that are ready)
    #[arg(short = 'j', long, default_value_t = 0, hide_default_value = true)]
    pub jobs: usize,
    /// Progress output
    #[arg(long, value_enum, default_value_t = crate::progress::ProgressMode::Auto)]
    pub progress: crate::progress::ProgressMode,
    /// Write each target's result metadata (JSON, by target) to the file
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: super::registry::RegistryFlags,
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Parses the files and resolves the targets, as `--print` shows them.
fn resolve(args: &BakeArgs, cwd: &Path) -> anyhow::Result<Resolved> {
    let files = strata_bake::read_files(&args.files, cwd)?;
    if files.is_empty() {
        return Err(UsageError("couldn't find a bake definition".into()).into());
    }
    let env = strata_bake::Env {
        lookup: &env_lookup,
        vars: std::env::vars().collect(),
        dir: cwd,
        builtins: BTreeMap::from([
            ("BAKE_CMD_CONTEXT".to_owned(), "cwd://".to_owned()),
            (
                "BAKE_LOCAL_PLATFORM".to_owned(),
                strata_frontend::Platform::host().to_string(),
            ),
        ]),
    };
    let cfg = strata_bake::parse_files(&files, &env)?;
    let mut sets = args.set.clone();
    if args.no_cache {
        sets.push("*.no-cache=true".into());
    }
    if args.pull {
        sets.push("*.pull=true".into());
    }
    Ok(strata_bake::resolve(
        &cfg,
        &args.targets,
        &sets,
        &env_lookup,
    )?)
}

/// What a target needs besides its `BuildOptions`: the targets it links
/// to by name, and the names to push after the build.
struct Job {
    opts: BuildOptions,
    /// `contexts` entries `NAME = "target:OTHER"`: (NAME, OTHER).
    links: Vec<(String, String)>,
    push: bool,
    /// Where its git and http contexts were fetched, kept until it is built.
    _fetched_contexts: super::named_contexts::Fetched,
}

fn refuse(target: &str, what: &str) -> anyhow::Error {
    UsageError(format!("target {target}: {what}")).into()
}

fn entry_csv(e: &Entry) -> String {
    let mut parts = Vec::new();
    if let Some(t) = e.get("type") {
        parts.push(format!("type={t}"));
    }
    for (k, v) in e.iter().filter(|(k, _)| *k != "type") {
        if v.contains([',', '"']) {
            parts.push(format!("\"{k}={}\"", v.replace('"', "\"\"")));
        } else {
            parts.push(format!("{k}={v}"));
        }
    }
    parts.join(",")
}

/// Maps one resolved target to build options; any key strata cannot honour
/// is an error naming the target and the key.
fn job_for(
    contexts: &super::named_contexts::Resolve<'_>,
    t: &Target,
    cwd: &Path,
    registry: &std::sync::Arc<strata_registry::Client>,
) -> anyhow::Result<Job> {
    let name = &t.name;
    let context_text = t.context.clone().unwrap_or_else(|| ".".into());
    if context_text.contains("://") || context_text.starts_with("git@") {
        return Err(refuse(
            name,
            &format!(
                "context {context_text:?}: only local directories are supported by strata bake"
            ),
        ));
    }
    let context = cwd.join(&context_text);
    let (dockerfile_name, dockerfile) = match &t.dockerfile_inline {
        Some(text) => ("Dockerfile".to_owned(), text.clone()),
        None => {
            let d = t.dockerfile.clone().unwrap_or_else(|| "Dockerfile".into());
            let path = if Path::new(&d).is_absolute() {
                PathBuf::from(&d)
            } else {
                context.join(&d)
            };
            let text = fs_err::read_to_string(&path)
                .with_context(|| format!("target {name}: reading its Dockerfile"))?;
            (d, text)
        }
    };
    let mut links = Vec::new();
    let mut other_contexts = BTreeMap::new();
    for (k, v) in t.contexts.iter().flatten() {
        let key = strata_build::named_context_name(k)
            .ok_or_else(|| refuse(name, &format!("contexts.{k}: invalid context name {k}")))?;
        if let Some(other) = v.strip_prefix("target:") {
            links.push((key, other.to_owned()));
        } else {
            // Local paths are the working directory's, as buildx's
            // `toBuildOpt` leaves them (`cwd://` said so explicitly).
            let v = v.strip_prefix("cwd://").unwrap_or(v);
            other_contexts.insert(key, v.to_owned());
        }
    }
    let (named_contexts, fetched_contexts) =
        super::named_contexts::resolve_contexts(&other_contexts, cwd, contexts)
            .with_context(|| format!("target {name}"))?;
    let mut outputs = Vec::new();
    let mut push = false;
    for o in t.outputs.iter().flatten() {
        let ty = o.get("type").map(String::as_str).unwrap_or_default();
        let pushes = o.get("push").is_some_and(|p| p == "true");
        match ty {
            "cacheonly" => {}
            "registry" => push = true,
            "image" if pushes => push = true,
            "image" if o.keys().all(|k| k == "type" || k == "push") => {}
            "docker" if !o.contains_key("dest") => {
                return Err(refuse(
                    name,
                    "output type=docker without dest (loading into a daemon) is not supported by strata bake; use type=docker,dest=FILE",
                ));
            }
            _ => outputs.push(
                strata_build::parse_output(&entry_csv(o))
                    .map_err(|e| refuse(name, &format!("output {}: {e}", entry_csv(o))))?,
            ),
        }
    }
    if let Some(a) = t
        .attest
        .iter()
        .flatten()
        .find(|a| a.get("disabled").is_none_or(|d| d != "true"))
    {
        return Err(refuse(
            name,
            &format!(
                "attest {}: attestations are not supported by strata",
                entry_csv(a)
            ),
        ));
    }
    if t.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
        return Err(refuse(name, "annotations are not supported by strata"));
    }
    let ulimits = t
        .ulimits
        .iter()
        .flatten()
        .map(|u| {
            u.parse::<strata_exec::Ulimit>()
                .map_err(|e| refuse(name, &format!("ulimits {u:?}: {e}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(c) = t.call.as_deref().filter(|c| *c != "build") {
        return Err(refuse(
            name,
            &format!(
                "call = {c:?}: only build is supported by strata bake (use `strata build --check` for checks)"
            ),
        ));
    }
    if let Some(e) = t
        .entitlements
        .iter()
        .flatten()
        .find(|e| e.as_str() != "network.host")
    {
        return Err(refuse(
            name,
            &format!("entitlement {e:?} is not supported by strata"),
        ));
    }
    let network = match t.network.as_deref() {
        None | Some("default") => strata_exec::Network::Sandbox,
        Some("none") => strata_exec::Network::None,
        Some("host") => strata_exec::Network::Host,
        Some(o) => {
            return Err(refuse(
                name,
                &format!("network {o:?}: expected default, none or host"),
            ));
        }
    };
    let secrets = read_secrets(
        &t.secrets
            .iter()
            .flatten()
            .map(|s| {
                let mut parts = vec![format!("id={}", s.id)];
                if !s.src.is_empty() {
                    parts.push(format!("src={}", s.src));
                }
                if !s.env.is_empty() {
                    parts.push(format!("env={}", s.env));
                }
                parts.join(",")
            })
            .collect::<Vec<_>>(),
    )
    .with_context(|| format!("target {name}: secret"))?;
    let ssh_socket = match t.ssh.as_deref() {
        None | Some([]) => None,
        Some([s]) if s.id == "default" => match s.paths.as_slice() {
            [] => Some(PathBuf::from(std::env::var("SSH_AUTH_SOCK").map_err(
                |_| refuse(name, "ssh default: SSH_AUTH_SOCK is not set"),
            )?)),
            [p] => Some(PathBuf::from(p)),
            _ => {
                return Err(refuse(
                    name,
                    "ssh: only one agent socket is supported by strata",
                ));
            }
        },
        Some(_) => {
            return Err(refuse(
                name,
                "ssh: only the `default` id is supported by strata",
            ));
        }
    };
    let shm_size = match t.shm_size.as_deref() {
        None => None,
        Some(v) => Some(parse_binary_size(v).ok_or_else(|| {
            refuse(
                name,
                &format!("shm-size {v}: expected a size such as 64m or 1g"),
            )
        })?),
    };
    let platforms = match t.platforms.as_deref() {
        None | Some([]) => Vec::new(),
        Some(list) => parse_platforms(&list.join(",")).with_context(|| format!("target {name}"))?,
    };
    let opts = BuildOptions {
        context,
        dockerfile_name,
        dockerfile,
        // A linked target's output is the cache only: it names nothing.
        tags: if t.linked {
            Vec::new()
        } else {
            t.tags.clone().unwrap_or_default()
        },
        build_args: t
            .args
            .iter()
            .flatten()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect(),
        target: t.target.clone(),
        no_cache: t.no_cache == Some(true),
        no_cache_filter: t.no_cache_filter.clone().unwrap_or_default(),
        outputs,
        network,
        labels: t
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect(),
        timestamp_now: false,
        secrets,
        ssh_socket,
        pull: t.pull == Some(true),
        registry: Some(registry.clone()),
        cache_from: t
            .cache_from
            .iter()
            .flatten()
            .map(|c| strata_build::remote_cache::parse_cache_from(&entry_csv(c)))
            .collect::<Result<_, _>>()
            .map_err(|e| refuse(name, &format!("cache-from: {e}")))?,
        cache_to: t
            .cache_to
            .iter()
            .flatten()
            .map(|c| strata_build::remote_cache::parse_cache_to(&entry_csv(c)))
            .collect::<Result<_, _>>()
            .map_err(|e| refuse(name, &format!("cache-to: {e}")))?,
        jobs: 0,
        extra_hosts: t
            .extra_hosts
            .iter()
            .flatten()
            .filter_map(|(h, ip)| ip.as_ref().map(|ip| format!("{h}={ip}")))
            .map(|spec| parse_add_host(&spec))
            .collect::<anyhow::Result<_>>()
            .with_context(|| format!("target {name}: extra-hosts"))?,
        shm_size,
        ulimits,
        cgroup_parent: None,
        platforms,
        named_contexts,
        // `attest` is refused above: bake's images carry no attestations.
        attestations: Default::default(),
        // Each RUN step picks the strongest isolation that works here.
        isolation: strata_exec::Isolation::Auto,
        // Ctrl-C ends `strata bake` at once (the builds' own cancel path
        // is wired for `strata build` only).
        cancel: None,
    };
    if push && opts.tags.is_empty() {
        return Err(refuse(name, "push needs tags to push to"));
    }
    Ok(Job {
        opts,
        links,
        push,
        _fetched_contexts: fetched_contexts,
    })
}

/// How a target ended.
enum Outcome {
    Built(Box<BuildResult>),
    Failed(String),
}

/// Runs the jobs: a job starts once the targets it links to are built
/// (it fails without running if one of them failed), at most `jobs` at
/// once (0: no limit).
fn run_all(
    lease: &strata_store::Lease,
    store: &strata_store::Store,
    mut jobs: BTreeMap<String, Job>,
    limit: usize,
    progress: &Mutex<crate::progress::Progress>,
) -> BTreeMap<String, Outcome> {
    let mut done: BTreeMap<String, Outcome> = BTreeMap::new();
    let step_base = Mutex::new(0usize);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<(String, Outcome)>();
        let mut running = 0usize;
        loop {
            // Start every job whose links are done, up to the limit.
            let ready: Vec<String> = jobs
                .iter()
                .filter(|(_, j)| j.links.iter().all(|(_, o)| done.contains_key(o)))
                .map(|(k, _)| k.clone())
                .collect();
            for name in ready {
                if limit != 0 && running >= limit {
                    break;
                }
                let Some(mut job) = jobs.remove(&name) else {
                    continue;
                };
                let mut failed_link = None;
                for (ctx, other) in &job.links {
                    match done.get(other) {
                        Some(Outcome::Built(r)) if r.platforms.len() <= 1 => {
                            job.opts.named_contexts.insert(
                                ctx.clone(),
                                strata_build::NamedContext::Image(r.image_id.to_string()),
                            );
                        }
                        Some(Outcome::Built(_)) => {
                            failed_link = Some(format!(
                                "contexts.{ctx}: target {other} has several platforms; strata uses a target: context of one platform only"
                            ));
                        }
                        _ => failed_link = Some(format!("target {other} (contexts.{ctx}) failed")),
                    }
                }
                if let Some(why) = failed_link {
                    done.insert(name, Outcome::Failed(why));
                    continue;
                }
                running += 1;
                let tx = tx.clone();
                let step_base = &step_base;
                s.spawn(move || {
                    // Step numbers are renumbered into one sequence, and
                    // each step is labelled with its target.
                    let mut numbers: BTreeMap<usize, usize> = BTreeMap::new();
                    let mut renumber = |n: usize| {
                        *numbers.entry(n).or_insert_with(|| {
                            let mut b = step_base.lock().unwrap_or_else(|e| e.into_inner());
                            *b += 1;
                            *b
                        })
                    };
                    let label = name.clone();
                    let mut events = |e: Event| {
                        let e = match e {
                            Event::Step { n, name } => Event::Step {
                                n: renumber(n),
                                name: match name.strip_prefix('[') {
                                    Some(rest) => format!("[{label} {rest}"),
                                    None => format!("[{label}] {name}"),
                                },
                            },
                            Event::Cached { n } => Event::Cached { n: renumber(n) },
                            Event::Output { n, data } => Event::Output {
                                n: renumber(n),
                                data,
                            },
                            Event::Done { n, seconds } => Event::Done {
                                n: renumber(n),
                                seconds,
                            },
                            Event::Error { n, message } => Event::Error {
                                n: renumber(n),
                                message,
                            },
                            Event::Internal { n, work, seconds } => Event::Internal {
                                n: renumber(n),
                                work,
                                seconds,
                            },
                            w @ Event::Warning(_) => w,
                        };
                        progress.lock().unwrap_or_else(|e| e.into_inner()).event(e);
                    };
                    let r =
                        strata_build::build_with_lease(store, Some(lease), &job.opts, &mut events);
                    let outcome = match r {
                        Ok(r) => Outcome::Built(Box::new(r)),
                        Err(strata_build::BuildError::Dockerfile(d)) => Outcome::Failed(d.render()),
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    let _ = tx.send((name, outcome));
                });
            }
            if running == 0 {
                // Nothing runs and nothing could start: what is left links
                // to targets that are not being built (cannot happen after
                // resolution) or waits on a cycle.
                for (name, job) in std::mem::take(&mut jobs) {
                    let missing: Vec<&str> = job.links.iter().map(|(_, o)| o.as_str()).collect();
                    done.insert(
                        name,
                        Outcome::Failed(format!(
                            "waits for targets that cannot be built: {}",
                            missing.join(", ")
                        )),
                    );
                }
                break;
            }
            match rx.recv() {
                Ok((name, outcome)) => {
                    running -= 1;
                    done.insert(name, outcome);
                }
                Err(_) => break,
            }
        }
    });
    done
}

pub fn run(args: BakeArgs) -> anyhow::Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let resolved = resolve(&args, &cwd)?;
    if args.print {
        std::io::stdout().write_all(strata_bake::print(&resolved).as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let client = std::sync::Arc::new(args.registry.client(Default::default())?);
    let store = super::store::open_store()?;
    // One lease for every target's blobs (an `oci-layout://` context's
    // image from its load on); no target holds the store lock while it
    // builds.
    let lease = store.lease("bake")?;
    let mut jobs = BTreeMap::new();
    for (name, t) in &resolved.targets {
        let platforms = match t.platforms.as_deref() {
            None | Some([]) => Vec::new(),
            Some(list) => parse_platforms(&list.join(","))?,
        };
        let contexts = super::named_contexts::Resolve {
            store: &store,
            lease: &lease,
            registry: &args.registry,
            platforms: &platforms,
        };
        jobs.insert(name.clone(), job_for(&contexts, t, &cwd, &client)?);
    }
    let progress = Mutex::new(crate::progress::Progress::new(args.progress, false));
    let pushes: BTreeMap<String, Vec<String>> = jobs
        .iter()
        .filter(|(_, j)| j.push)
        .map(|(k, j)| (k.clone(), j.opts.tags.clone()))
        .collect();
    let tags: BTreeMap<String, Vec<String>> = jobs
        .iter()
        .map(|(k, j)| (k.clone(), j.opts.tags.clone()))
        .collect();
    let outcomes = run_all(&lease, &store, jobs, args.jobs, &progress);
    let progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
    let quiet = progress.is_quiet();
    let mut failed = false;
    let mut meta = serde_json::Map::new();
    #[expect(clippy::print_stderr, reason = "the bake summary is progress output")]
    for (name, outcome) in &outcomes {
        match outcome {
            Outcome::Built(r) => {
                if let Some(names) = pushes.get(name) {
                    for n in names {
                        if let Err(e) = super::registry::push_image(&store, &client, n, quiet) {
                            eprintln!("ERROR: target {name}: pushing {n}: {e:#}");
                            failed = true;
                        }
                    }
                }
                if !quiet && progress.wants_summary() {
                    eprintln!(
                        "target {name}: image {}, steps run: {}, steps cached: {}",
                        r.image_id, r.steps_run, r.steps_cached
                    );
                }
                // The manifest as shipped, compressing the layers for it
                // only when the metadata is written.
                let shipped = match &args.metadata_file {
                    Some(_) => store
                        .get_image(&r.image_id)
                        .map_err(anyhow::Error::from)
                        .and_then(|img| match img {
                            Some(img) => super::ship::shipped_digest(&store, &img),
                            None => Ok(r.manifest_digest),
                        }),
                    None => Ok(r.manifest_digest),
                };
                let manifest_digest = match shipped {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("ERROR: target {name}: the manifest digest: {e:#}");
                        failed = true;
                        r.manifest_digest
                    }
                };
                meta.insert(
                    name.clone(),
                    serde_json::json!({
                        "containerimage.digest": manifest_digest.to_string(),
                        "containerimage.config.digest": r.image_id.to_string(),
                        "image.name": tags.get(name).map(|t| t.join(",")).unwrap_or_default(),
                        "strata.steps.run": r.steps_run,
                        "strata.steps.cached": r.steps_cached,
                    }),
                );
            }
            Outcome::Failed(message) => {
                failed = true;
                eprintln!("ERROR: target {name}: {message}");
            }
        }
    }
    if let Some(p) = &args.metadata_file {
        strata_oci::atomic_write_shared(
            p,
            serde_json::to_string_pretty(&serde_json::Value::Object(meta))?.as_bytes(),
        )
        .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(if failed {
        ExitCode::from(crate::exit::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
