//! Signalling a running step from another process: `strata stop` and
//! `strata kill` reach the process of a container that a `strata run`
//! (its owner) started. The step's host pid is in `step-*/pid` under the
//! step's scratch directory (written by the helper for cancellation); it is
//! believed only if the owner is among that process's ancestors, so a
//! reused pid is never signalled.

use std::path::Path;

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::ExecError;
use crate::protocol::PID_FILE;

/// Parses a signal as Docker does: a name with or without `SIG` (any
/// case) or a number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let t = s.trim();
    let invalid = || format!("invalid signal: {s}");
    if let Ok(n) = t.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| invalid());
    }
    let upper = t.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>().map_err(|_| invalid())
}

/// The running step started by `owner` whose scratch directory is
/// `scratch_dir`, if there is one.
pub fn step_pid(scratch_dir: &Path, owner: u32) -> Option<Pid> {
    let rd = std::fs::read_dir(scratch_dir).ok()?;
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with("step-") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join(PID_FILE)) else {
            continue;
        };
        let Ok(pid) = text.trim().parse::<u32>() else {
            continue;
        };
        if descends_from(pid, owner) {
            return Pid::from_raw(i32::try_from(pid).ok()?).into();
        }
    }
    None
}

/// Sends `sig` to the step `owner` runs in `scratch_dir`; `Ok(false)` when
/// there is no such process (not started yet, or already exited while its
/// owner records the exit), so the caller can wait for either instead of
/// failing a container that is starting or stopping.
pub fn signal_step(scratch_dir: &Path, owner: u32, sig: Signal) -> Result<bool, ExecError> {
    let Some(pid) = step_pid(scratch_dir, owner) else {
        return Ok(false);
    };
    match nix::sys::signal::kill(pid, sig) {
        Ok(()) => Ok(true),
        // It exited between being found and being signalled.
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(ExecError::Io {
            path: scratch_dir.join(PID_FILE),
            source: std::io::Error::from(e),
        }),
    }
}

/// Whether `owner` is `pid`'s parent, grandparent or great-grandparent
/// (strata run → helper → step; rootless adds no level in between).
fn descends_from(pid: u32, owner: u32) -> bool {
    let mut cur = pid;
    for _ in 0..4 {
        match parent_of(cur) {
            Some(p) if p == owner => return true,
            Some(p) if p > 1 => cur = p,
            _ => return false,
        }
    }
    false
}

/// Field 4 of `/proc/PID/stat`, after the command name's closing parenthesis.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_as_docker_reads_them() {
        assert_eq!(parse_signal("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("term"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("Kill"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("NOPE"), Err("invalid signal: NOPE".into()));
        assert_eq!(parse_signal("99"), Err("invalid signal: 99".into()));
    }

    #[test]
    fn a_pid_not_started_by_the_owner_is_not_believed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let step = dir.path().join("step-x");
        std::fs::create_dir(&step).expect("mkdir");
        // This test process: its parent is the test harness, not pid 1
        // of some other owner.
        std::fs::write(step.join(PID_FILE), std::process::id().to_string()).expect("pid");
        assert_eq!(step_pid(dir.path(), u32::MAX - 1), None);
        let parent = parent_of(std::process::id()).expect("parent");
        assert_eq!(
            step_pid(dir.path(), parent),
            Some(Pid::from_raw(std::process::id() as i32))
        );
    }
}
