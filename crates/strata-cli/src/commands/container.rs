//! Containers: `run` (an image plus a writable layer, on the executor),
//! `ps`, `stop`/`kill` (a signal to the process a `strata run` started,
//! which records the exit), `rm` and `commit`. A finished container's writable layer is kept as a
//! layer tar under the store (`containers/<id>/layer.tar`), which `diff` reads
//! and `commit` turns into an image layer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;
use strata_oci::Digest;
use strata_store::ContainerRecord;

use super::store::open_store;
use crate::exit::UsageError;
use crate::render::{self, ago};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Set environment variables (K=V, or K to take it from here)
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// User (name|uid[:group|gid])
    #[arg(short, long)]
    pub user: Option<String>,
    /// Bind mount a host path: HOST:CONTAINER[:ro]
    #[arg(short, long)]
    pub volume: Vec<String>,
    /// Network: default, none or host
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Name of the container
    #[arg(long)]
    pub name: Option<String>,
    /// Keep stdin open: the container reads this process's standard input
    #[arg(short, long)]
    pub interactive: bool,
    /// Security options: `seccomp=unconfined` turns off the default seccomp filter
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    #[command(flatten)]
    pub isolation: super::build_flags::IsolationFlag,
    /// Allocate a terminal (accepted for compatibility; no terminal is allocated)
    #[arg(short, long)]
    pub tty: bool,
    /// Image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
    /// Only show container IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: table, json, or a template such as '{{.ID}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Containers to remove
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Remove even if running
    #[arg(short, long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// Containers to stop
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Signal to send to the container (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(short, long)]
    pub signal: Option<String>,
    /// Seconds to wait before killing the container (-1: wait forever)
    #[arg(
        short = 't',
        long = "time",
        visible_alias = "timeout",
        default_value_t = 10,
        allow_negative_numbers = true
    )]
    pub time: i64,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// Containers to kill
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Signal to send to the container
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
}

#[derive(clap::Args)]
pub struct CommitArgs {
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the created image
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Container whose changes become the new image's top layer
    pub container: String,
    /// Name for the new image
    pub reference: Option<String>,
}

fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

fn new_id(image: &Digest) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Digest::of(format!("{}-{nanos}-{image}", std::process::id()).as_bytes()).hex()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn run(a: RunArgs) -> anyhow::Result<ExitCode> {
    // Checked before anything is made, as `strata build` does. `auto`'s
    // choice is not reported: stderr is the container's.
    let (isolation, _) = super::build_flags::resolve_isolation(a.isolation.requested()?)?;
    let store = open_store()?;
    let img = store.resolve(&a.image)?;
    // Held while the config is read and the layers are unpacked, until the
    // container record pins the image.
    let lease = store.lease_images("run", [(&img, a.image.as_str())])?;
    let cfg = store.image_config(&img)?;
    let c = &cfg["config"];
    let mut argv = str_list(&c["Entrypoint"]);
    if a.command.is_empty() {
        argv.extend(str_list(&c["Cmd"]));
    } else {
        argv.extend(a.command.iter().cloned());
    }
    if argv.is_empty() {
        return Err(UsageError("no command specified".into()).into());
    }
    let mut env = str_list(&c["Env"]);
    for e in &a.env {
        let kv = if e.contains('=') {
            e.clone()
        } else {
            match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => continue,
            }
        };
        let key = kv.split('=').next().unwrap_or("").to_owned();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(kv);
    }
    let network = match a.network.as_str() {
        "default" | "bridge" => strata_exec::Network::Sandbox,
        "none" => strata_exec::Network::None,
        "host" => strata_exec::Network::Host,
        other => {
            return Err(
                UsageError(format!("network {other} not found (default, none, host)")).into(),
            );
        }
    };
    super::build_flags::warn_if_default_network_is_the_hosts(network);
    let mut mounts = Vec::new();
    for v in &a.volume {
        let parts: Vec<&str> = v.split(':').collect();
        let (host, target, ro) = match parts.as_slice() {
            [h, t] => (*h, *t, false),
            [h, t, o] => (*h, *t, o.split(',').any(|x| x == "ro")),
            _ => {
                return Err(
                    UsageError(format!("invalid volume spec {v:?}: HOST:CONTAINER[:ro]")).into(),
                );
            }
        };
        if !target.starts_with('/') || !host.starts_with('/') {
            return Err(UsageError(format!(
                "invalid volume spec {v:?}: both paths must be absolute"
            ))
            .into());
        }
        // Docker creates a missing host path as a directory.
        if !Path::new(host).exists() {
            std::fs::create_dir_all(host).with_context(|| format!("creating {host}"))?;
        }
        mounts.push(strata_exec::Mount::Volume {
            target: target.to_owned(),
            source: PathBuf::from(host),
            readonly: ro,
        });
    }
    let id = new_id(&img.id);
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("strata_{}", &id[..8]));
    let dir = store.container_dir(&id);
    let mut rec = ContainerRecord {
        id: id.clone(),
        name,
        image: img.id,
        image_name: a.image.clone(),
        command: argv.clone(),
        upper: dir.join("layer.tar"),
        created: strata_store::now_unix(),
        state: "running".into(),
        owner: strata_store::OwnerProcess::current(),
    };
    let lowers = strata_image::lowers(&store, &lease, &img.layers)?;
    // Recorded before its directory exists, so GC never sees an orphan.
    store.put_container(&store.lock()?, &rec)?;
    drop(lease);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let spec = strata_exec::RunSpec {
        lowers,
        scratch_dir: dir.clone(),
        argv,
        env,
        cwd: a
            .workdir
            .clone()
            .or_else(|| {
                c["WorkingDir"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "/".into()),
        user: a
            .user
            .clone()
            .or_else(|| c["User"].as_str().map(str::to_owned))
            .unwrap_or_default(),
        hostname: id[..12].to_owned(),
        provide_hostname: true,
        network,
        mounts,
        extra_hosts: Vec::new(),
        shm_size: None,
        output: Box::new(|stream, data| {
            // Passing the container's output through is the command's job.
            let _ = match stream {
                strata_exec::OutputStream::Stdout => std::io::stdout().lock().write_all(data),
                strata_exec::OutputStream::Stderr => std::io::stderr().lock().write_all(data),
            };
        }),
        cancel: None,
        seccomp: !a
            .security_opt
            .iter()
            .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined"),
        ulimits: Vec::new(),
        stdin: if a.interactive {
            use std::os::fd::AsFd;
            Some(
                std::io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("duplicating stdin")?,
            )
        } else {
            None
        },
    };
    let run_options = strata_exec::RunOptions {
        isolation,
        ..Default::default()
    };
    let outcome = match strata_exec::run_with(spec, &run_options) {
        Ok(o) => o,
        Err(e) => {
            // It never ran: keep the record as "created", like a container
            // docker failed to start, so `ps -a`/`rm` can see it.
            rec.state = "created".into();
            let lock = store.lock()?;
            store.put_container(&lock, &rec)?;
            if a.rm {
                store.remove_container(&lock, &rec.id)?;
            }
            return Err(anyhow::Error::new(e).context("running the container"));
        }
    };
    let code: u8 = match outcome.status {
        strata_exec::ExitStatus::Code(c) => u8::try_from(c & 0xff).unwrap_or(1),
        strata_exec::ExitStatus::Signal(s) => u8::try_from((128 + s) & 0xff).unwrap_or(1),
    };
    // The writable layer is kept for `diff`/`commit`; whether or not that
    // works, the container has exited and `--rm` removes it.
    let saved = if a.rm {
        Ok(())
    } else {
        save_writable_layer(&outcome, &rec.upper)
            .with_context(|| format!("writing {}", rec.upper.display()))
    };
    drop(outcome);
    rec.state = format!("exited({code})");
    let lock = store.lock()?;
    store.put_container(&lock, &rec)?;
    if a.rm {
        store.remove_container(&lock, &rec.id)?;
    }
    saved.context("saving the container's writable layer")?;
    Ok(ExitCode::from(code))
}

/// The container's changes as an uncompressed layer tar, written by the
/// same layer writer as a build step (owners as the container saw them).
fn save_writable_layer(outcome: &strata_exec::RunOutcome, dest: &Path) -> anyhow::Result<()> {
    let changes = outcome.upper.changes()?;
    let mut f = strata_oci::AtomicFile::create(dest)?;
    let opts = strata_oci::LayerOptions {
        compression: strata_oci::Compression::Uncompressed,
        epoch: None,
        threads: 1,
        owners: strata_exec::idmap::IdMapping::current().owner_map(),
    };
    strata_oci::write_layer(
        outcome.upper.root(),
        &changes,
        &opts,
        std::io::BufWriter::new(f.file()),
    )?;
    f.commit()?;
    Ok(())
}

fn status(c: &ContainerRecord, now: i64) -> String {
    match c
        .state
        .strip_prefix("exited(")
        .and_then(|s| s.strip_suffix(')'))
    {
        Some(code) => format!("Exited ({code}) {}", ago(c.created, now)),
        // Its `strata run` was killed: Docker's word for a container whose
        // process is gone without an exit status.
        None if c.is_dead() => "Dead".into(),
        None if c.state == "running" => {
            format!("Up {}", ago(c.created, now).trim_end_matches(" ago"))
        }
        None => "Created".into(),
    }
}

pub fn ps(a: PsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let now = strata_store::now_unix();
    let mut rows = Vec::new();
    for c in store.containers()? {
        if !a.all && (c.state != "running" || c.is_dead()) {
            continue;
        }
        let mut cmd = format!("\"{}\"", c.command.join(" "));
        if !a.no_trunc && cmd.chars().count() > 20 {
            cmd = cmd.chars().take(19).collect::<String>() + "…";
        }
        let mut r = BTreeMap::new();
        r.insert(
            "ID".to_owned(),
            if a.no_trunc {
                c.id.clone()
            } else {
                c.id[..12.min(c.id.len())].to_owned()
            },
        );
        r.insert("Image".to_owned(), c.image_name.clone());
        r.insert("Command".to_owned(), cmd);
        r.insert("RunningFor".to_owned(), ago(c.created, now));
        r.insert("CreatedAt".to_owned(), strata_store::rfc3339(c.created));
        r.insert("Status".to_owned(), status(&c, now));
        r.insert("Ports".to_owned(), String::new());
        r.insert("Names".to_owned(), c.name.clone());
        rows.push(r);
    }
    let cols = [
        ("CONTAINER ID", "ID"),
        ("IMAGE", "Image"),
        ("COMMAND", "Command"),
        ("CREATED", "RunningFor"),
        ("STATUS", "Status"),
        ("PORTS", "Ports"),
        ("NAMES", "Names"),
    ];
    out(&render::listing(a.quiet, a.format.as_deref(), &cols, &rows))?;
    Ok(ExitCode::SUCCESS)
}

pub fn rm(a: RmArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    super::per_item::each_reporting_errors(&a.containers, |name| {
        let r = (|| -> anyhow::Result<()> {
            let c = store.resolve_container(name)?;
            if is_running(&c) {
                if !a.force {
                    return Err(strata_store::StoreError::Conflict(format!(
                        "cannot remove container \"{name}\": container is running: stop the container before removing or force remove"
                    ))
                    .into());
                }
                // `docker rm -f`: killed first, so its `strata run` records
                // the exit and cleans up its own step before the record goes.
                signal_container(&store, &c, strata_exec::signal::Signal::SIGKILL)?;
                wait_stopped(&store, &c.id, None)?;
            }
            // A container whose `strata run` was killed keeps its step's
            // directory; rootless, files in it belong to subordinate IDs,
            // which only the executor's remover (in the user namespace)
            // can delete. Tried second: it needs user namespaces.
            let dir = store.container_dir(&c.id);
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                strata_exec::snapshot::remove_tree(&dir)
                    .with_context(|| format!("removing container {name}'s files"))?;
            }
            let lock = store.lock()?;
            match store.remove_container(&lock, &c.id) {
                // `run --rm` removed it while it was being killed.
                Err(strata_store::StoreError::NoSuchContainer(_)) if a.force => Ok(()),
                r => r.map_err(Into::into),
            }
        })();
        if r.is_ok() {
            out(&format!("{name}\n"))?;
        }
        Ok(r.map_err(chain))
    })
}

/// An error with its causes, as one line: what `docker rm`/`stop`/`kill`
/// print per container (the outermost message alone hides why).
fn chain(e: anyhow::Error) -> String {
    format!("{e:#}")
}

/// Whether `c` has a live `strata run` and so a process to signal.
fn is_running(c: &ContainerRecord) -> bool {
    c.state == "running" && c.owner.is_some_and(|o| o.is_alive())
}

/// Waits until the container's `strata run` has recorded its exit (or
/// died), for at most `limit` (None: forever); says whether it has.
fn wait_stopped(
    store: &strata_store::Store,
    id: &str,
    limit: Option<std::time::Duration>,
) -> anyhow::Result<bool> {
    let start = std::time::Instant::now();
    loop {
        let c = match store.resolve_container(id) {
            Ok(c) => c,
            // `run --rm` removed it.
            Err(strata_store::StoreError::NoSuchContainer(_)) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        if !is_running(&c) {
            return Ok(true);
        }
        if limit.is_some_and(|l| start.elapsed() >= l) {
            return Ok(false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Sends `sig` to the container's process; `Ok(false)` when the container
/// stopped before there was a process to signal. A running container's
/// step may not have started yet, or may have exited while its `strata run`
/// (rootless: through its helper) still records the exit: either way the
/// record soon says which, so this waits for the process or the record.
fn signal_container(
    store: &strata_store::Store,
    c: &ContainerRecord,
    sig: strata_exec::signal::Signal,
) -> anyhow::Result<bool> {
    let owner = c
        .owner
        .ok_or_else(|| anyhow::anyhow!("container {} has no owning process", c.id))?;
    let dir = store.container_dir(&c.id);
    loop {
        if strata_exec::signal::signal_step(&dir, owner.pid, sig)
            .with_context(|| format!("sending {sig} to container {}", c.name))?
        {
            return Ok(true);
        }
        match store.resolve_container(&c.id) {
            Ok(now) if is_running(&now) => {}
            Ok(_) | Err(strata_store::StoreError::NoSuchContainer(_)) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The image's STOPSIGNAL, or SIGTERM.
fn stop_signal(store: &strata_store::Store, c: &ContainerRecord) -> anyhow::Result<String> {
    let Some(img) = store.get_image(&c.image)? else {
        return Ok("SIGTERM".into());
    };
    let config = store.image_config(&img)?;
    Ok(config["config"]["StopSignal"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("SIGTERM")
        .to_owned())
}

fn parse_signal(s: &str) -> anyhow::Result<strata_exec::signal::Signal> {
    strata_exec::signal::parse_signal(s).map_err(|e| UsageError(e).into())
}

/// `docker stop`: the stop signal, up to `--time` seconds for the container
/// to exit, then SIGKILL. A container that is not running is left as it is.
pub fn stop(a: StopArgs) -> anyhow::Result<ExitCode> {
    if let Some(s) = &a.signal {
        parse_signal(s)?;
    }
    let store = open_store()?;
    super::per_item::each_reporting_errors(&a.containers, |name| {
        let r = (|| -> anyhow::Result<()> {
            let c = store.resolve_container(name)?;
            if !is_running(&c) {
                return Ok(());
            }
            let sig = match &a.signal {
                Some(s) => parse_signal(s)?,
                None => parse_signal(&stop_signal(&store, &c)?)?,
            };
            if !signal_container(&store, &c, sig)? {
                // It stopped on its own meanwhile.
                return Ok(());
            }
            let limit = u64::try_from(a.time)
                .ok()
                .map(std::time::Duration::from_secs);
            if !wait_stopped(&store, &c.id, limit)? {
                // It may exit between the wait and the kill: then there is
                // no process left to signal, which is what we wanted.
                signal_container(&store, &c, strata_exec::signal::Signal::SIGKILL)?;
                wait_stopped(&store, &c.id, None)?;
            }
            Ok(())
        })();
        if r.is_ok() {
            out(&format!("{name}\n"))?;
        }
        Ok(r.map_err(chain))
    })
}

/// `docker kill`: a signal (SIGKILL by default) to the container's process;
/// with SIGKILL, returns once the container has exited.
pub fn kill(a: KillArgs) -> anyhow::Result<ExitCode> {
    let sig = parse_signal(&a.signal)?;
    let store = open_store()?;
    super::per_item::each_reporting_errors(&a.containers, |name| {
        let r = (|| -> anyhow::Result<()> {
            let c = store.resolve_container(name)?;
            if !is_running(&c) || !signal_container(&store, &c, sig)? {
                anyhow::bail!(
                    "cannot kill container: {name}: container {} is not running",
                    c.id
                );
            }
            if sig == strata_exec::signal::Signal::SIGKILL {
                wait_stopped(&store, &c.id, None)?;
            }
            Ok(())
        })();
        if r.is_ok() {
            out(&format!("{name}\n"))?;
        }
        Ok(r.map_err(chain))
    })
}

pub fn commit(a: CommitArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    let c = store.resolve_container(&a.container)?;
    // `-c` lines apply to the base image's config as Dockerfile lines would.
    let container_config = if a.change.is_empty() {
        None
    } else {
        let base = store
            .get_image(&c.image)?
            .ok_or_else(|| anyhow::anyhow!("No such image: {}", c.image))?;
        let config = store.image_config(&base)?;
        Some(strata_build::config::apply_changes(
            &config["config"],
            &a.change,
        )?)
    };
    let img = strata_store::commit_container(
        &store,
        &lock,
        &c,
        container_config,
        a.message.as_deref(),
        a.author.as_deref(),
        a.reference.as_deref(),
    )?;
    out(&format!("{}\n", img.id))?;
    Ok(ExitCode::SUCCESS)
}
