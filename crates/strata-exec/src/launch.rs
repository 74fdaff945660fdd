//! Starting the step helper, in the parent: which binary, with which
//! arguments and descriptors (the namespaces helper, or the process that
//! becomes a chroot step), and the short rootless tasks (unpack, remove)
//! that need nothing more than the helper's user namespace. Which isolation
//! a step gets is decided in [`crate::run::run_with`] from
//! [`crate::isolation`].

use std::io::Read;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::error::ExecError;
use crate::overlay::Mode;
use crate::protocol::{
    CHROOT_ARG, ERROR_FD, HELPER_ARG, HELPER_ENV, ROOTFUL_ARG, ROOTLESS_ARG, STDIN_FD,
};

static HELPER_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Uses `exe` instead of `/proc/self/exe` as the helper binary. For test
/// harnesses and embedders whose `main` cannot call
/// [`crate::maybe_run_helper`]; `exe` must call it first thing. The first
/// call wins.
pub fn set_helper_exe(exe: PathBuf) {
    let _ = HELPER_EXE.set(exe);
}

/// The binary that is re-executed as the helper.
pub(crate) fn helper_exe() -> PathBuf {
    if let Some(p) = HELPER_EXE.get() {
        return p.clone();
    }
    match std::env::var_os(HELPER_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/proc/self/exe"),
    }
}

/// The helper process for `task` with piped stdio. `step_stdin`, when given,
/// is handed to the helper as fd [`STDIN_FD`] (its own stdin carries the
/// spec).
pub(crate) fn helper_command(
    mode: Mode,
    task: &str,
    path: Option<&Path>,
    step_stdin: Option<RawFd>,
) -> Command {
    let mut cmd = Command::new(helper_exe());
    cmd.arg(HELPER_ARG)
        .arg(match mode {
            Mode::Rootless => ROOTLESS_ARG,
            Mode::Rootful => ROOTFUL_ARG,
        })
        .arg(task);
    if let Some(p) = path {
        cmd.arg(p);
    }
    prepare(&mut cmd, step_stdin, None);
    cmd
}

/// The process that becomes an `--isolation chroot` step (see
/// [`crate::chroot_step`]), with piped stdio. `step_stdin` as for
/// [`helper_command`]; `error_fd` (close-on-exec, at least 10) becomes fd
/// [`ERROR_FD`], where the process reports a failure before `execve`.
pub(crate) fn chroot_command(step_stdin: Option<RawFd>, error_fd: RawFd) -> Command {
    let mut cmd = Command::new(helper_exe());
    cmd.arg(CHROOT_ARG);
    prepare(&mut cmd, step_stdin, Some(error_fd));
    cmd
}

/// What every helper gets: its own process group, a parent-death signal,
/// piped stdio, no inherited environment, and the descriptors it is handed.
fn prepare(cmd: &mut Command, step_stdin: Option<RawFd>, error_fd: Option<RawFd>) {
    // Its own process group: a terminal's Ctrl-C reaches strata alone, which
    // either cancels the step (RunSpec::cancel) or dies, taking the helper
    // with it through the parent-death signal below.
    cmd.process_group(0);
    cmd.env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only calls prctl,
    // dup2 and fcntl, which are async-signal-safe; it allocates nothing and
    // takes no locks.
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
            // Each descriptor must end up at its number without close-on-exec:
            // dup2 gives that, except when it already is there (dup2 onto
            // itself keeps the flag). The step's stdin first: the error
            // descriptor is at least 10, so placing stdin cannot clobber it.
            for (fd, at) in [(step_stdin, STDIN_FD), (error_fd, ERROR_FD)] {
                let Some(fd) = fd else { continue };
                let ok = if fd == at {
                    libc::fcntl(fd, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(fd, at) >= 0
                };
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    };
}

/// Spawns `cmd`, naming the helper binary when that fails.
pub(crate) fn spawn(cmd: &mut Command) -> Result<std::process::Child, ExecError> {
    cmd.spawn().map_err(|source| ExecError::Spawn {
        exe: helper_exe(),
        source,
    })
}

/// Waits for a rootless helper's one-byte "user namespace made" signal on
/// its stdout, then writes its ID maps.
pub(crate) fn map_rootless_helper(
    child: &std::process::Child,
    stdout: Option<&mut std::process::ChildStdout>,
) -> Result<(), ExecError> {
    if let Some(out) = stdout {
        let mut byte = [0u8; 1];
        out.read_exact(&mut byte)
            .map_err(|source| ExecError::HelperIo {
                what: "did not start",
                source,
            })?;
    }
    crate::idmap::map_ids(child.id())
}

/// Runs a rootless unpack/remove task in a helper inside a user namespace,
/// feeding `input` to its stdin.
pub(crate) fn run_task_rootless(
    task: &str,
    path: &Path,
    input: Option<&mut dyn Read>,
) -> Result<(), ExecError> {
    // Where user namespaces are refused (a container as --user 1000), the
    // helper cannot start: say what is missing instead.
    crate::isolation::auto().map_err(ExecError::Setup)?;
    let mut child = spawn(&mut helper_command(Mode::Rootless, task, Some(path), None))?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    let fed = map_rootless_helper(&child, stdout.as_mut()).map(|()| {
        if let (Some(mut w), Some(r)) = (child.stdin.take(), input) {
            // A helper that failed early closes its stdin: its stderr says why.
            let _ = std::io::copy(r, &mut w);
        }
    });
    drop(child.stdin.take());
    if fed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|source| ExecError::HelperIo {
        what: "waiting for it to exit",
        source,
    })?;
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
