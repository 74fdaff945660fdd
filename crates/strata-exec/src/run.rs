//! The parent side of a step: prepares its private directory, starts the
//! helper (see [`crate::helper`]), maps IDs for rootless runs, streams the
//! output and collects the result.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::ExecError;
use crate::diff::Upper;
use crate::helper::{self, HELPER_ARG, HelperResult, HelperSpec, ROOTLESS_ARG, Stub};
use crate::snapshot::Mode;
use crate::spec::{CacheSharing, ExitStatus, Mount, OutputStream, RunSpec, SnapshotMethod};

/// A finished step. A non-zero exit is not an error: the caller reports the
/// step, its command and `status`.
#[derive(Debug)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// The step's changes; owns the scratch directory.
    pub upper: Upper,
    pub method: SnapshotMethod,
    /// Why overlayfs was not used, when `method` is [`SnapshotMethod::Copy`].
    pub fallback_reason: Option<String>,
}

/// Knobs beyond the step itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Use the copying fallback even where overlayfs works (tests, diagnosis).
    pub force_copy: bool,
}

/// Runs one step; see [`RunSpec`].
pub fn run(spec: RunSpec) -> Result<RunOutcome, ExecError> {
    run_with(spec, &RunOptions::default())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Upstream resolvers as the host sees them; systemd-resolved's stub address
/// is unreachable from a fresh network namespace, so use its real upstreams.
fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.contains("127.0.0.53")
        && let Ok(real) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return real;
    }
    main
}

/// Kills a running step: its pid 1 when known (the helper then reaps it and
/// exits normally, tearing down the mount namespace), else the helper itself
/// (the step's pid 1 follows through its parent-death signal).
fn kill_step(state: &Path, helper: &mut std::process::Child) -> Option<nix::unistd::Pid> {
    let pid = std::fs::read_to_string(state.join(helper::PID_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(nix::unistd::Pid::from_raw);
    match pid {
        Some(p) if nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL).is_ok() => {}
        _ => {
            let _ = helper.kill();
        }
    }
    pid
}

/// The helper process for `task` with piped stdio.
fn helper_command(mode: Mode, task: &str, path: Option<&Path>) -> Command {
    helper_command_with_stdin(mode, task, path, None)
}

/// Like [`helper_command`], also handing `step_stdin` to the helper as fd
/// [`helper::STDIN_FD`] (its own stdin carries the spec).
fn helper_command_with_stdin(
    mode: Mode,
    task: &str,
    path: Option<&Path>,
    step_stdin: Option<std::os::fd::RawFd>,
) -> Command {
    let mut cmd = Command::new(helper::helper_exe());
    cmd.arg(HELPER_ARG)
        .arg(if mode == Mode::Rootless {
            ROOTLESS_ARG
        } else {
            "rootful"
        })
        .arg(task);
    if let Some(p) = path {
        cmd.arg(p);
    }
    // Its own process group: a terminal's Ctrl-C reaches strata alone, which
    // either cancels the step (RunSpec::cancel) or dies, taking the helper
    // with it through the parent-death signal below.
    cmd.process_group(0);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            // The helper (and through its own PDEATHSIG, the step) dies with
            // the thread that started it, including when strata is killed.
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 and fcntl are async-signal-safe. The descriptor must end
            // up as STDIN_FD without close-on-exec: dup2 gives that, except
            // when it already is STDIN_FD (dup2 onto itself keeps the flag).
            if let Some(fd) = step_stdin {
                let ok = if fd == helper::STDIN_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(fd, helper::STDIN_FD) >= 0
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
    cmd
}

/// Runs a rootless unpack/remove task in a helper inside a user namespace,
/// feeding `input` to its stdin.
pub(crate) fn run_task_rootless(
    task: &str,
    path: &Path,
    input: Option<&mut dyn Read>,
) -> Result<(), ExecError> {
    let mut child = helper_command(Mode::Rootless, task, Some(path))
        .spawn()
        .map_err(|e| ExecError::Spawn {
            exe: helper::helper_exe(),
            source: e,
        })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let fed = (|| -> Result<(), ExecError> {
        let mut byte = [0u8; 1];
        if let Some(out) = stdout.as_mut() {
            out.read_exact(&mut byte)
                .map_err(|e| ExecError::Helper(format!("helper did not start: {e}")))?;
        }
        crate::idmap::map_ids(child.id())?;
        if let (Some(mut w), Some(r)) = (child.stdin.take(), input) {
            // A helper that failed early closes its stdin: its stderr says why.
            let _ = std::io::copy(r, &mut w);
        }
        Ok(())
    })();
    drop(child.stdin.take());
    if fed.is_err() {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .map_err(|e| ExecError::Helper(format!("wait for helper: {e}")))?;
    let message = stderr_thread.join().unwrap_or_default();
    fed?;
    if status.success() {
        Ok(())
    } else {
        Err(ExecError::Helper(format!(
            "{task} {}: {} ({status})",
            path.display(),
            message.trim()
        )))
    }
}

/// Runs one step with options.
pub fn run_with(mut spec: RunSpec, opts: &RunOptions) -> Result<RunOutcome, ExecError> {
    if spec.argv.is_empty() {
        return Err(ExecError::Invalid("empty command".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(ExecError::Invalid(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    for m in &spec.mounts {
        helper::rel_target(m.target()).map_err(ExecError::Invalid)?;
    }
    let mode = Mode::current();
    let state = tempfile::Builder::new()
        .prefix("step-")
        .tempdir_in(&spec.scratch_dir)
        .map_err(io_err(&spec.scratch_dir))?
        .keep();
    // From here on the Upper owns the directory and removes it on every path.
    let mut upper = Upper {
        state: state.clone(),
        upper: state.join("upper"),
        lowers: spec.lowers.clone(),
        method: SnapshotMethod::Overlay,
        stubs: Vec::new(),
    };

    let mut hosts = format!(
        "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        spec.hostname
    );
    for (name, ip) in &spec.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    for (name, content) in [
        ("hosts", hosts),
        ("resolv.conf", host_resolv_conf()),
        ("hostname", format!("{}\n", spec.hostname)),
    ] {
        let p = state.join(name);
        std::fs::write(&p, content).map_err(io_err(&p))?;
    }

    // Cache sharing: hold locks for the whole step.
    let mut locks = Vec::new();
    for (i, m) in spec.mounts.iter_mut().enumerate() {
        if let Mount::Cache { dir, sharing, .. } = m {
            if *sharing == CacheSharing::Shared {
                continue;
            }
            let f = std::fs::File::open(&*dir).map_err(io_err(dir))?;
            let arg = if *sharing == CacheSharing::Locked {
                FlockArg::LockExclusive
            } else {
                FlockArg::LockExclusiveNonblock
            };
            match Flock::lock(f, arg) {
                Ok(l) => locks.push(l),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if *sharing == CacheSharing::Private => {
                    let fresh = state.join(format!("cache{i}"));
                    std::fs::create_dir(&fresh).map_err(io_err(&fresh))?;
                    *dir = fresh;
                }
                Err((_, e)) => {
                    return Err(ExecError::Io {
                        path: dir.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    let hspec = HelperSpec {
        lowers: spec.lowers.clone(),
        state: state.clone(),
        argv: std::mem::take(&mut spec.argv),
        env: std::mem::take(&mut spec.env),
        cwd: spec.cwd.clone(),
        user: spec.user.clone(),
        hostname: spec.hostname.clone(),
        network: spec.network,
        mounts: std::mem::take(&mut spec.mounts),
        shm_size: spec.shm_size,
        mode,
        force_copy: opts.force_copy,
        stdin_fd: spec.stdin.is_some(),
        seccomp: spec.seccomp,
    };
    let input = serde_json::to_vec(&hspec).map_err(|e| ExecError::Invalid(e.to_string()))?;

    let step_stdin = spec.stdin.take();
    let mut cmd = helper_command_with_stdin(
        mode,
        helper::TASK_STEP,
        None,
        step_stdin.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    );
    let mut child = cmd.spawn().map_err(|e| ExecError::Spawn {
        exe: helper::helper_exe(),
        source: e,
    })?;
    // The helper has its copy; ours would keep the pipe open after it exits.
    drop(step_stdin);
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let setup = (|| -> Result<(), ExecError> {
        if mode == Mode::Rootless {
            let mut byte = [0u8; 1];
            if let Some(out) = stdout.as_mut() {
                out.read_exact(&mut byte)
                    .map_err(|e| ExecError::Helper(format!("helper did not start: {e}")))?;
            }
            crate::idmap::map_ids(child.id())?;
        }
        if let Some(mut w) = stdin.take() {
            w.write_all(&input)
                .map_err(|e| ExecError::Helper(format!("send spec: {e}")))?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }

    let (tx, rx) = mpsc::channel::<(OutputStream, Vec<u8>)>();
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (
            OutputStream::Stdout,
            stdout.map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        (
            OutputStream::Stderr,
            stderr.map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stream, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut cancelled = false;
    let mut step_pid = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((stream, bytes)) => (spec.output)(stream, &bytes),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled
            && spec
                .cancel
                .as_ref()
                .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            cancelled = true;
            step_pid = kill_step(&state, &mut child);
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let helper_status = child
        .wait()
        .map_err(|e| ExecError::Helper(format!("wait for helper: {e}")))?;
    drop(locks);
    if cancelled {
        if let Some(pid) = step_pid {
            // pid 1's exit waits for the rest of its namespace; once it is
            // gone, so are the mounts, and the scratch dir can be removed.
            for _ in 0..500 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        return Err(ExecError::Cancelled);
    }
    let result_path = state.join(helper::RESULT_FILE);
    let result: HelperResult = match std::fs::read(&result_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ExecError::Helper(format!("{}: {e}", result_path.display())))?,
        Err(_) => {
            return Err(ExecError::Helper(format!(
                "helper exited ({helper_status}) without a result"
            )));
        }
    };
    if let Ok(bytes) = std::fs::read(state.join(helper::STUBS_FILE)) {
        upper.stubs = serde_json::from_slice::<Vec<Stub>>(&bytes).unwrap_or_default();
    }
    match result {
        HelperResult::Exited {
            status,
            method,
            fallback_reason,
        } => {
            upper.method = method;
            Ok(RunOutcome {
                status,
                upper,
                method,
                fallback_reason,
            })
        }
        HelperResult::Failed { message, .. } => Err(ExecError::Setup(message)),
    }
}
