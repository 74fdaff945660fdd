//! The executor: runs a process in fresh Linux namespaces on an overlayfs
//! snapshot (rootful or rootless through a user namespace) and turns what it
//! changed into layer changes.
//!
//! This is the only crate with `unsafe` and raw syscalls; each `unsafe` block
//! carries a `// SAFETY:` comment. Nothing mounted or spawned here outlives the
//! step that created it, on any path.
//!
//! Entry points: [`run`] (one RUN step), [`Upper::changes`] (what it changed),
//! [`snapshot::unpack_layer`] (a layer tar into a lowerdir, through
//! `strata_oci::apply` with overlay whiteouts; [`snapshot::unpack_layer_verified`]
//! also checks the diffID), and
//! [`maybe_run_helper`], which the `strata` binary calls first thing in
//! `main` because steps re-execute it as their namespace helper.

// Leaves: rules and types, no processes, no writes.
mod error;
mod overlay;
mod protocol;
pub mod spec;
pub mod user;
// Filesystem work both sides share.
mod extract;
mod flatten;
// The parent side.
mod diff;
pub mod idmap;
pub mod interrupt;
mod launch;
pub mod network;
pub mod owners;
mod run;
pub mod snapshot;
// The in-namespace side.
mod helper;
mod seccomp;

pub use diff::Upper;
pub use error::{ExecError, UnpackError};
pub use helper::maybe_run_helper;
pub use launch::set_helper_exe;
pub use network::sandbox_network_helper;
pub use protocol::HELPER_ENV;
pub use run::{RunOptions, RunOutcome, run, run_with};
pub use snapshot::Mode;
pub use spec::{
    CacheSharing, ExitStatus, Mount, Network, OutputSink, OutputStream, RunSpec, SnapshotMethod,
};
