//! The parent side of a step: prepares its private directory, starts the
//! helper (see [`crate::launch`]; what runs in the namespaces is
//! [`crate::helper`]), maps IDs for rootless runs, streams the output and
//! collects the result.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::diff::Upper;
use crate::error::ExecError;
use crate::isolation::Isolation;
use crate::launch::{helper_command, map_rootless_helper, spawn};
use crate::overlay::Mode;
use crate::protocol::{
    HelperResult, HelperSpec, PID_FILE, RESULT_FILE, RESULT_WRITE_FAILED, STUBS_FILE, Stub,
    TASK_STEP, rel_target,
};
use crate::spec::{ExitStatus, Network, OutputStream, RunSpec, SnapshotMethod};

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
    /// How the step is isolated; `Auto` is decided once per process (see
    /// [`crate::isolation::choose`]).
    pub isolation: Isolation,
    /// `--cgroup-parent`: the step's cgroup is made under this one
    /// (see [`crate::cgroup_parent`]); `None`: under strata's own.
    pub cgroup_parent: Option<crate::CgroupParent>,
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
    let pid = std::fs::read_to_string(state.join(PID_FILE))
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
        rel_target(m.target()).map_err(ExecError::Invalid)?;
    }
    let isolation = match opts.isolation {
        Isolation::Auto => crate::isolation::auto().map_err(ExecError::Setup)?,
        Isolation::None => {
            return Err(ExecError::Invalid(
                crate::isolation::NONE_REFUSED.to_string(),
            ));
        }
        explicit => explicit,
    };
    if isolation == Isolation::Chroot {
        let (status, upper) = crate::chroot::run(spec, opts.cgroup_parent.as_ref())?;
        return Ok(RunOutcome {
            status,
            upper,
            method: SnapshotMethod::Copy,
            fallback_reason: Some("--isolation chroot copies the layers".into()),
        });
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
        marked_dirs: false,
    };

    // The default network is private when pasta is there to connect it.
    let pasta = match spec.network {
        Network::Sandbox => crate::network::sandbox_network_helper(),
        Network::None | Network::Host => None,
    };
    let (resolv_conf, dns_forward) = match pasta {
        Some(_) => crate::network::private_resolv_conf(&host_resolv_conf()),
        None => (host_resolv_conf(), None),
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
        ("resolv.conf", resolv_conf),
        ("hostname", format!("{}\n", spec.hostname)),
    ] {
        let p = state.join(name);
        std::fs::write(&p, content).map_err(io_err(&p))?;
    }

    // Cache sharing: hold locks for the whole step.
    let locks = crate::step_parent::lock_cache_mounts(&mut spec.mounts, &state)?;
    // Made before the helper starts; it joins between fork and exec. Ends
    // whatever is left in it and goes when dropped, on every path below.
    let cgroup = crate::cgroup::StepCgroup::for_step(&state, opts.cgroup_parent.as_ref())?;
    // Held until the step is over: the sockets SSH mounts bind.
    let ssh_forwards = crate::chroot_mounts::forward_ssh_mounts(&mut spec.mounts, &state)?;

    let input = serde_json::to_vec(&HelperSpec {
        step: &spec,
        state: state.clone(),
        mode,
        force_copy: opts.force_copy,
        stdin_fd: spec.stdin.is_some(),
        pasta,
        dns_forward,
        device_filter: cgroup.is_some(),
    })
    .map_err(ExecError::Encode)?;

    let step_stdin = spec.stdin.take();
    let mut cmd = helper_command(
        mode,
        TASK_STEP,
        None,
        step_stdin.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
    );
    if let Some(cg) = &cgroup {
        cg.join_on_exec(&mut cmd);
    }
    let mut child = spawn(&mut cmd)?;
    // The helper has its copy; ours would keep the pipe open after it exits.
    drop(step_stdin);
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let setup = (|| -> Result<(), ExecError> {
        if mode == Mode::Rootless {
            map_rootless_helper(&child, stdout.as_mut())?;
        }
        if let Some(mut w) = stdin.take() {
            w.write_all(&input).map_err(|source| ExecError::HelperIo {
                what: "sending the step",
                source,
            })?;
        }
        Ok(())
    })();
    if let Err(e) = setup {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }

    let (rx, readers) = crate::step_parent::read_outputs(
        stdout.map(|s| Box::new(s) as Box<dyn Read + Send>),
        stderr.map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut cancelled = false;
    let mut step_pid = None;
    // The end of the helper's stderr: where it says why a result is missing.
    let mut stderr_tail: Vec<u8> = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((stream, bytes)) => {
                if stream == OutputStream::Stderr {
                    stderr_tail.extend_from_slice(&bytes);
                    let excess = stderr_tail.len().saturating_sub(4096);
                    stderr_tail.drain(..excess);
                }
                (spec.output)(stream, &bytes)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled && spec.cancelled() {
            cancelled = true;
            match &cgroup {
                // The helper, the step and everything it started.
                Some(cg) => cg.kill_all(),
                None => step_pid = kill_step(&state, &mut child),
            }
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let helper_status = child.wait().map_err(|source| ExecError::HelperIo {
        what: "waiting for it to exit",
        source,
    })?;
    drop(locks);
    // Nothing of the step outlives it: what is left in its cgroup is killed
    // and waited for (the PID namespace already ended the step's own).
    if let Some(cg) = cgroup {
        cg.finish();
    }
    drop(ssh_forwards);
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
    let result_path = state.join(RESULT_FILE);
    let result: HelperResult = match std::fs::read(&result_path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ExecError::Decode {
            path: result_path.clone(),
            source,
        })?,
        Err(_) => {
            let tail = String::from_utf8_lossy(&stderr_tail);
            let why = tail
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix(RESULT_WRITE_FAILED))
                .map(|w| format!(": cannot write {w}"))
                .unwrap_or_default();
            return Err(ExecError::Helper(format!(
                "helper exited ({helper_status}) without a result{why}"
            )));
        }
    };
    if let Ok(bytes) = std::fs::read(state.join(STUBS_FILE)) {
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
