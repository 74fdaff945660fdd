//! A RUN step inside the helper: fresh namespaces, the root, and the step's
//! pid 1 forked into them and waited for.

use std::io::{Read, Write};

use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::context::err;
use crate::protocol::{HelperSpec, PID_FILE};
use crate::spec::{ExitStatus, Network, SnapshotMethod};

/// Runs the step and returns how its process ended. `method` and
/// `fallback_reason` say how the root was provided.
pub(super) fn run_step(
    spec: &HelperSpec,
    method: &mut Option<SnapshotMethod>,
    fallback_reason: &mut Option<String>,
) -> Result<ExitStatus, String> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if spec.step.network == Network::None {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(err("unshare namespaces"))?;
    // Nothing mounted from here on may propagate back to the host.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(err("make / private"))?;

    let merged = super::root::prepare(spec, method, fallback_reason)?;

    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(err("pipe"))?;
    // SAFETY: the helper process is single-threaded (it runs before the host
    // program starts any thread), so the child may allocate and run any code.
    match unsafe { nix::unistd::fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            drop(err_r);
            let e = match super::exec::child(spec, &merged) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            let mut w = std::fs::File::from(err_w);
            let _ = w.write_all(e.as_bytes());
            // SAFETY: _exit is async-signal-safe and skips the parent's atexit
            // handlers, which must not run in this forked copy.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(err_w);
            // For cancellation: the parent kills the step by this pid.
            let _ = std::fs::write(spec.state.join(PID_FILE), child.as_raw().to_string());
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            let status = wait_child(child)?;
            if !msg.is_empty() {
                return Err(msg);
            }
            Ok(status)
        }
    }
}

fn wait_child(child: Pid) -> Result<ExitStatus, String> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Code(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitStatus::Signal(sig as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("wait for the step: {e}")),
        }
    }
}
