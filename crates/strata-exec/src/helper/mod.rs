//! The helper process: the part of a step that runs in its own namespaces
//! (the in-namespace side; [`crate::launch`] and [`crate::run`] are the
//! parent's). Files by concern: `step.rs` (namespaces, fork, wait),
//! `root.rs` (stubs, overlay or flattened copy), `exec.rs` (the step's pid 1
//! up to `execve`), `mounts.rs`, `dev.rs`, `net.rs`, `caps.rs`.
//!
//! strata is multi-threaded (tokio, rayon), and `unshare`/`fork` with mount
//! setup must happen in a single-threaded process, so [`crate::run`]
//! re-executes the strata binary (or, for this crate's tests, the small
//! `strata-exec-helper` binary) with a hidden first argument.
//! [`maybe_run_helper`] recognises it before anything else starts. The helper
//! reads its [`HelperSpec`] from stdin, unshares the mount, UTS, IPC, PID (and
//! optionally network) namespaces, mounts the overlay, and forks the step's
//! pid 1, which finishes the root (proc, dev, provided files, RUN mounts),
//! pivots into it, drops privileges and execs the command. Everything mounted
//! lives in the helper's mount namespace, so it disappears with the helper and
//! the step; both die with strata through `PR_SET_PDEATHSIG`.

pub(crate) mod caps;
mod context;
mod dev;
pub(crate) mod exec;
mod mounts;
mod net;
mod root;
mod step;

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

use crate::overlay::Mode;
use crate::protocol::{
    HELPER_ARG, HelperResult, HelperSpec, RESULT_FILE, RESULT_WRITE_FAILED, ROOTLESS_ARG,
    TASK_OWNERS, TASK_REMOVE, TASK_STEP, TASK_UNPACK,
};
use crate::spec::SnapshotMethod;

/// Must be the first thing `main` calls: when this process was started as a
/// step helper, runs it and exits; otherwise returns immediately.
pub fn maybe_run_helper() {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == HELPER_ARG) {
        std::process::exit(helper_main());
    }
}

fn helper_main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let rootless = args.get(2).is_some_and(|a| a == ROOTLESS_ARG);
    if rootless {
        if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_err() {
            return 72;
        }
        let mut out = std::io::stdout();
        if out.write_all(b"R").and_then(|()| out.flush()).is_err() {
            return 72;
        }
    }
    let task = args.get(3).and_then(|a| a.to_str()).unwrap_or(TASK_STEP);
    let mode = if rootless {
        Mode::Rootless
    } else {
        Mode::Rootful
    };
    if task != TASK_STEP {
        let Some(dir) = args.get(4).map(PathBuf::from) else {
            return 64;
        };
        let res = match task {
            TASK_UNPACK => unpack_stdin(&dir, mode),
            TASK_OWNERS => crate::owners::apply_stdin(&dir),
            // Rootless: stdin closes once the ID maps are written; before
            // that this process owns nothing it could remove.
            TASK_REMOVE => std::io::stdin()
                .read_to_end(&mut Vec::new())
                .and_then(|_| std::fs::remove_dir_all(&dir))
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
            _ => return 64,
        };
        return match res {
            Ok(()) => 0,
            Err(e) => {
                // Reported to the parent, which captures this stream: text
                // is all that crosses, so the whole chain goes (a full disk
                // says so only in the innermost cause).
                let _ = writeln!(std::io::stderr(), "{}", error_chain(&e));
                1
            }
        };
    }
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return 70;
    }
    let spec: HelperSpec = match serde_json::from_slice(&input) {
        Ok(s) => s,
        Err(_) => return 70,
    };
    let mut method = None;
    let mut fallback_reason = None;
    let result = match step::run_step(&spec, &mut method, &mut fallback_reason) {
        Ok(status) => HelperResult::Exited {
            status,
            method: method.unwrap_or(SnapshotMethod::Overlay),
            fallback_reason,
        },
        Err(message) => HelperResult::Failed { message, method },
    };
    // Written aside and renamed: a full disk leaves no result rather than a
    // truncated one the parent would misreport as malformed.
    let path = spec.state.join(RESULT_FILE);
    let partial = spec.state.join(format!("{RESULT_FILE}.partial"));
    let written = serde_json::to_vec(&result)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&partial, bytes))
        .and_then(|()| std::fs::rename(&partial, &path));
    match written {
        Ok(()) => 0,
        Err(e) => {
            // The parent reports a missing result with the last line of the
            // helper's stderr (the step's output stream): this one.
            let _ = writeln!(
                std::io::stderr(),
                "{RESULT_WRITE_FAILED}{}: {e}",
                path.display()
            );
            71
        }
    }
}

/// `e` and its causes, joined as the CLI renders a chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The unpack task: the layer tar on stdin into `dir`. Rootless, stdin
/// carries data only once the parent has written the ID maps, so waiting for
/// the first bytes also waits until this process is root in its namespace
/// (the applier checks that once, to decide whether to keep owners).
fn unpack_stdin(dir: &Path, mode: Mode) -> std::io::Result<()> {
    let mut stdin = std::io::BufReader::new(std::io::stdin().lock());
    stdin.fill_buf()?;
    crate::extract::unpack_into(stdin, dir, mode, None).map_err(std::io::Error::other)
}
