//! The executor: runs a process in fresh Linux namespaces on an overlayfs
//! snapshot (rootful or rootless through a user namespace), or where those
//! are not allowed (a container with Docker's default profile) chrooted into
//! a copy of its layers, and turns what it changed into layer changes.
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
//! `main` because steps re-execute it as their namespace helper (or as the
//! chroot step). [`isolation::choose`] says which isolation works here, and
//! [`cgroup::support`] whether steps get a cgroup with a device filter.

// Leaves: rules and types, no processes, no writes.
pub mod cgroup_parent;
mod devices;
mod error;
mod overlay;
mod protocol;
pub mod spec;
pub mod user;
// Filesystem work both sides share.
mod extract;
mod flatten;
// The parent side.
pub mod cgroup;
mod chroot;
mod chroot_mounts;
mod diff;
pub mod idmap;
pub mod interrupt;
pub mod isolation;
mod launch;
pub mod network;
pub mod owners;
mod run;
pub mod signal;
pub mod snapshot;
mod step_parent;
mod ulimit;
// The in-namespace side.
mod chroot_step;
mod helper;
mod seccomp;

pub use cgroup_parent::CgroupParent;
pub use diff::Upper;
pub use error::{ExecError, UnpackError};
pub use isolation::Isolation;
pub use launch::set_helper_exe;
pub use network::sandbox_network_helper;
pub use protocol::HELPER_ENV;
pub use run::{RunOptions, RunOutcome, run, run_with};
pub use snapshot::Mode;
pub use spec::{
    CacheSharing, ExitStatus, Mount, Network, OutputSink, OutputStream, RunSpec, SnapshotMethod,
};
pub use ulimit::Ulimit;

/// Must be the first thing `main` calls: when this process was started as a
/// step helper or a chroot step, runs it and exits; otherwise returns
/// immediately.
pub fn maybe_run_helper() {
    chroot_step::maybe_run();
    helper::maybe_run_helper();
}
