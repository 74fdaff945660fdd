//! The wire protocol between strata and its step helper: the arguments that
//! start one, the spec it reads on stdin, and the files it leaves in the
//! step's state directory. A leaf: both sides ([`crate::launch`] and
//! [`crate::run`] in the parent, [`crate::helper`] in the namespaces) use it,
//! it uses neither.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::overlay::{self, Mode};
use crate::spec::{ExitStatus, Mount, RunSpec, SnapshotMethod};

/// The hidden first argument that turns a strata process into a helper.
pub(crate) const HELPER_ARG: &str = "__strata-exec-helper";

/// Environment override of the helper binary, for test suites of other
/// crates (whose harness cannot call [`crate::maybe_run_helper`]): point it
/// at the `strata` binary or at `strata-exec-helper`.
pub const HELPER_ENV: &str = "STRATA_EXEC_HELPER";

/// The first argument of the process that becomes an `--isolation chroot`
/// step ([`crate::chroot_step`]).
pub(crate) const CHROOT_ARG: &str = "__strata-exec-chroot";

/// Where a chroot step process reports a failure before `execve` (the
/// descriptor is close-on-exec there, so a successful exec reads as EOF).
pub(crate) const ERROR_FD: i32 = 4;

/// Second argument of a rootless helper: it creates its user namespace itself
/// (so it holds every capability there), writes one byte to stdout, and
/// waits for the parent to write the ID maps before the spec arrives.
pub(crate) const ROOTLESS_ARG: &str = "rootless";
/// Second argument of a helper that keeps the caller's (root) privileges.
pub(crate) const ROOTFUL_ARG: &str = "rootful";

/// Third argument: what the helper does.
pub(crate) const TASK_STEP: &str = "step";
/// Unpack the layer tar on stdin into the directory named by the fourth
/// argument (rootless: inside the user namespace, so owners are kept).
pub(crate) const TASK_UNPACK: &str = "unpack";
/// Remove the tree named by the fourth argument (rootless: files owned by
/// subordinate IDs can only be removed from inside the user namespace).
pub(crate) const TASK_REMOVE: &str = "remove";
/// Set the owners (and modes) listed as JSON on stdin, under the tree named
/// by the fourth argument (rootless: inside the user namespace).
pub(crate) const TASK_OWNERS: &str = "owners";

/// The parent's instructions, sent as JSON on the helper's stdin. The step
/// travels as the caller's own [`RunSpec`] (its callbacks and descriptors
/// are not serialized); `S` is `&RunSpec` when sending, so the parent keeps
/// the callbacks it needs while the step runs.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HelperSpec<S = RunSpec> {
    pub step: S,
    /// The step's private directory (upper, work, merged, provided files).
    pub state: PathBuf,
    pub mode: Mode,
    /// Testing and diagnosis: skip overlayfs and use the copying fallback.
    pub force_copy: bool,
    /// The step's stdin arrives as fd [`STDIN_FD`] (else it gets /dev/null).
    #[serde(default)]
    pub stdin_fd: bool,
    /// The default network's connector (see [`crate::network`]): `pasta`'s
    /// path when the step gets a private network, `None` for the host's.
    #[serde(default)]
    pub pasta: Option<PathBuf>,
    /// The address in the step's resolv.conf that pasta forwards to the
    /// host's resolver (set when that resolver is on the host's loopback).
    #[serde(default)]
    pub dns_forward: Option<std::net::IpAddr>,
    /// The helper runs in a step cgroup with the device filter (see
    /// [`crate::cgroup`]): the step keeps CAP_MKNOD and its root and `/dev`
    /// allow device nodes, as Docker's do; without it, neither.
    #[serde(default)]
    pub device_filter: bool,
}

/// What the parent sends an `--isolation chroot` step process on stdin: the
/// step and the prepared root to `chroot(2)` into.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChrootSpec<S = RunSpec> {
    pub step: S,
    pub root: PathBuf,
    /// The step's stdin arrives as fd [`STDIN_FD`] (else it gets /dev/null).
    pub stdin_fd: bool,
}

/// The descriptor the parent places the step's stdin on, when it has one.
pub(crate) const STDIN_FD: i32 = 3;

/// What the helper leaves in `state/result.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum HelperResult {
    Exited {
        status: ExitStatus,
        method: SnapshotMethod,
        fallback_reason: Option<String>,
    },
    Failed {
        message: String,
        method: Option<SnapshotMethod>,
    },
}

pub(crate) const RESULT_FILE: &str = "result.json";
/// How the helper's last stderr line starts when it could not write its
/// result (the line goes on with the path and the error, e.g. ENOSPC).
pub(crate) const RESULT_WRITE_FAILED: &str = "strata step helper: cannot write ";
/// The step's pid 1, as seen from strata's PID namespace.
pub(crate) const PID_FILE: &str = "pid";
/// Entries the helper placed only to mount over (never layer content).
pub(crate) const STUBS_FILE: &str = "stubs.json";

/// A stub the step's root needs so something can be mounted over it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Stub {
    /// Relative to the image root.
    pub path: PathBuf,
    pub dir: bool,
    pub kind: StubKind,
}

/// What a stub stands for, which decides what it does to the directory it
/// is made in (see [`Stub::touched_parent`]).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum StubKind {
    /// The runtime's `/dev`, `/proc`, `/sys` and `/etc/hostname`, and mount
    /// targets below the first three: BuildKit makes no stub of its own for
    /// them in the image's tree.
    Runtime,
    /// `/etc/hosts` and `/etc/resolv.conf`: BuildKit stubs them, so their
    /// directory gets a new mtime in the step's root; it reaches the layer
    /// only when the step changes something else there (BuildKit's layer
    /// always has it: not done, as it would add `/etc` to nearly every RUN
    /// layer; docs/decisions.md).
    ProvidedFile,
    /// A `RUN --mount` target: its directory gets a new mtime and is kept
    /// in the step's layer, as in BuildKit's.
    Mount,
}

/// Directories the runtime mounts its own filesystems on; a mount target
/// below one is made in that filesystem, never in the image's tree.
pub(crate) const RUNTIME_DIRS: [&str; 3] = ["dev", "proc", "sys"];

/// The runtime's files BuildKit's executor stubs in the step's root when
/// the image lacks them (`MountStubsCleaner`'s fixed names).
const BUILDKIT_STUBBED_FILES: [&str; 2] = ["etc/hosts", "etc/resolv.conf"];

impl Stub {
    /// The stub for a `RUN --mount`'s target.
    pub(crate) fn for_mount(mount: &Mount) -> Result<Stub, String> {
        let path = rel_target(mount.target())?;
        let under_runtime = path
            .components()
            .next()
            .is_some_and(|c| RUNTIME_DIRS.iter().any(|d| c.as_os_str() == *d));
        Ok(Stub {
            path,
            dir: !mount.is_file(),
            kind: if under_runtime {
                StubKind::Runtime
            } else {
                StubKind::Mount
            },
        })
    }

    /// The stub for one of the runtime's files ([`provided_files`]).
    pub(crate) fn for_provided_file(rel: &str) -> Stub {
        Stub {
            path: PathBuf::from(rel),
            dir: false,
            kind: if BUILDKIT_STUBBED_FILES.contains(&rel) {
                StubKind::ProvidedFile
            } else {
                StubKind::Runtime
            },
        }
    }

    /// The image directory this stub gives a new mtime, as BuildKit's
    /// executor does. It lets the runtime make a missing mount point (and
    /// its missing parents) in the step's root, and afterwards removes them
    /// but puts back the timestamps their parent had just before the
    /// removal (`MountStubsCleaner`, executor/stubs.go, for
    /// moby/buildkit#3148): those the mount point's creation gave it. So the
    /// deepest directory the image has on the way to a missing mount point
    /// ends the step with a new mtime, and BuildKit's differ puts it in the
    /// layer. `None` for a runtime stub, for a path the image has, for the
    /// root, and where a non-directory is on the way (BuildKit restores no
    /// times through a symlink).
    pub(crate) fn touched_parent(&self, lowers: &[PathBuf]) -> Option<PathBuf> {
        if self.kind == StubKind::Runtime || overlay::lookup(lowers, &self.path).is_some() {
            return None;
        }
        let mut dir = self.path.parent()?;
        while !dir.as_os_str().is_empty() {
            match overlay::lookup(lowers, dir) {
                Some(found) if found.meta.is_dir() => return Some(dir.to_path_buf()),
                Some(_) => return None,
                None => dir = dir.parent()?,
            }
        }
        None
    }
}

/// The files the runtime provides in a step (bind-mounted from `state`):
/// `/etc/hosts` and `/etc/resolv.conf`, and `/etc/hostname` when the spec
/// asks for it (`RunSpec::provide_hostname`).
pub(crate) fn provided_files(step: &crate::spec::RunSpec) -> &'static [&'static str] {
    if step.provide_hostname {
        &["etc/hosts", "etc/resolv.conf", "etc/hostname"]
    } else {
        &["etc/hosts", "etc/resolv.conf"]
    }
}

/// A mount target inside the image as a path relative to its root; checked
/// by the parent before the step starts and used by the helper to mount.
pub(crate) fn rel_target(target: &str) -> Result<PathBuf, String> {
    let rel = Path::new(target.trim_start_matches('/'));
    match overlay::normal_components(rel) {
        Some(c) if !c.is_empty() => Ok(c.iter().collect()),
        _ => Err(format!(
            "mount target {target:?} must be an absolute path below /"
        )),
    }
}
