//! The executor: runs a process in fresh Linux namespaces on an overlayfs
//! snapshot (rootful or rootless through a user namespace) and turns what it
//! changed into layer changes.
//!
//! This is the only crate with `unsafe` and raw syscalls; each `unsafe` block
//! carries a `// SAFETY:` comment. Nothing mounted or spawned here outlives the
//! step that created it, on any path.
//!
//! Entry points: [`run`] (one RUN step), [`Upper::changes`] (what it changed),
//! [`snapshot::unpack_layer`] (a layer tar into a lowerdir), and
//! [`maybe_run_helper`], which the `strata` binary calls first thing in
//! `main` because steps re-execute it as their namespace helper.

mod copy;
mod diff;
mod helper;
pub mod idmap;
mod run;
mod seccomp;
pub mod snapshot;
pub mod spec;
mod unpack;
pub mod user;

use std::path::PathBuf;

pub use diff::Upper;
pub use helper::{HELPER_ENV, maybe_run_helper, set_helper_exe};
pub use run::{RunOptions, RunOutcome, run, run_with};
pub use snapshot::Mode;
pub use spec::{
    CacheSharing, ExitStatus, Mount, Network, OutputSink, OutputStream, RunSpec, SnapshotMethod,
};

/// The executor itself failed (a step exiting non-zero is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid step: {0}")]
    Invalid(String),
    #[error("cannot start the step helper {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("step helper: {0}")]
    Helper(String),
    /// Setting up the step's root or process failed (the message names what).
    #[error("setting up the step: {0}")]
    Setup(String),
    #[error("the step was cancelled")]
    Cancelled,
    #[error("unpacking layer into {path}: {message}")]
    Unpack { path: PathBuf, message: String },
}
