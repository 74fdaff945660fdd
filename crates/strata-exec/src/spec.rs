//! What the solver hands the executor for one RUN step, and what it gets back.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

/// Which of the step's output streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// The callback receiving the step's output live, chunk by chunk.
pub type OutputSink = Box<dyn FnMut(OutputStream, &[u8]) + Send>;

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// The default (`docker build`'s bridge): a private network namespace
    /// connected outwards by `pasta`, as rootless Podman's is, with no port
    /// forwarded either way and the host's loopback out of reach. Where
    /// pasta is not installed ([`crate::sandbox_network_helper`] is `None`),
    /// the host's network namespace, as BuildKit's OCI worker without CNI;
    /// the caller warns. Hostname, `/etc/hosts` and `/etc/resolv.conf` are
    /// the step's own either way (see docs/decisions.md).
    #[default]
    Sandbox,
    /// A fresh network namespace with only loopback, up.
    None,
    /// The host's network namespace.
    Host,
}

/// `RUN --mount=type=cache,sharing=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CacheSharing {
    /// Any number of concurrent steps use the directory at once.
    #[default]
    Shared,
    /// A step that finds the directory in use gets a fresh empty one instead
    /// (discarded after the step).
    Private,
    /// Steps take turns: an exclusive lock is held for the whole step.
    Locked,
}

/// One `RUN --mount`, with its source already resolved by the solver.
/// `target` is the absolute path inside the image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Mount {
    /// A persistent cache directory (`dir`, owned by the store). `uid`, `gid`
    /// and `mode` are applied to the directory when it is empty (first use).
    Cache {
        target: String,
        dir: PathBuf,
        sharing: CacheSharing,
        readonly: bool,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// A directory or file from the context or another stage; read-only
    /// unless `readwrite`, and writes are discarded after the step either way.
    Bind {
        target: String,
        source: PathBuf,
        readwrite: bool,
    },
    /// A host directory or file bind-mounted as it is (`strata run -v`):
    /// writes go to the host, unlike [`Mount::Bind`].
    Volume {
        target: String,
        source: PathBuf,
        readonly: bool,
    },
    /// An empty tmpfs.
    Tmpfs { target: String, size: Option<u64> },
    /// A secret, placed as a file on a tmpfs: never on disk, never in a layer.
    Secret {
        target: String,
        data: Vec<u8>,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// An SSH agent socket forwarded into the step.
    Ssh {
        target: String,
        socket: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    },
}

impl Mount {
    /// Absolute path of the mount inside the image.
    pub fn target(&self) -> &str {
        match self {
            Mount::Cache { target, .. }
            | Mount::Bind { target, .. }
            | Mount::Volume { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Secret { target, .. }
            | Mount::Ssh { target, .. } => target,
        }
    }

    /// Whether what is mounted is a file (a secret, an ssh socket, a bind of
    /// a non-directory), so that its mount point must be one too.
    pub(crate) fn is_file(&self) -> bool {
        match self {
            Mount::Secret { .. } | Mount::Ssh { .. } => true,
            Mount::Bind { source, .. } | Mount::Volume { source, .. } => std::fs::metadata(source)
                .map(|m| !m.is_dir())
                .unwrap_or(false),
            Mount::Cache { .. } | Mount::Tmpfs { .. } => false,
        }
    }
}

/// Everything needed to run one step. It is also what the parent sends its
/// step helper (see `protocol.rs`): the callback, the cancel flag and the
/// stdin descriptor stay with the parent and are not serialized.
#[derive(Serialize, Deserialize)]
pub struct RunSpec {
    /// Unpacked layers (see [`crate::snapshot::unpack_layer`]), top-most first.
    pub lowers: Vec<PathBuf>,
    /// Where the step's private state (upperdir, workdir, provided files)
    /// lives; must be on the same filesystem as nothing in particular, but
    /// not on an overlayfs if overlay mounts are wanted. The step's directory
    /// is created inside it and removed when the [`Upper`](crate::Upper) drops.
    pub scratch_dir: PathBuf,
    /// The command; for shell form the solver builds `SHELL + [cmd]`.
    pub argv: Vec<String>,
    /// `K=V` pairs: the stage's ENV plus the ARGs in scope. `PATH` defaults to
    /// the usual Docker value when absent.
    pub env: Vec<String>,
    /// Absolute working directory; created (as root) when missing.
    pub cwd: String,
    /// `USER` as written: `name|uid[:group|gid]`, resolved against the
    /// image's own `/etc/passwd` and `/etc/group`; empty means root.
    pub user: String,
    pub hostname: String,
    /// Whether the step is told its hostname through `/etc/hostname` and
    /// `$HOSTNAME`, as `docker run` tells a container; BuildKit's RUN gets
    /// neither (only `/etc/hosts` names it).
    #[serde(default)]
    pub provide_hostname: bool,
    pub network: Network,
    pub mounts: Vec<Mount>,
    /// `--add-host` entries appended to the step's `/etc/hosts`.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// Size of `/dev/shm` in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// Receives the step's output live.
    #[serde(skip, default = "discard_output")]
    pub output: OutputSink,
    /// When set to true (e.g. by a Ctrl-C handler), the step is killed and
    /// [`crate::run`] returns [`crate::ExecError::Cancelled`].
    #[serde(skip)]
    pub cancel: Option<Arc<AtomicBool>>,
    /// The step's standard input (`strata run -i`); `/dev/null` when `None`.
    #[serde(skip)]
    pub stdin: Option<std::os::fd::OwnedFd>,
    /// Docker's default seccomp restrictions (see `seccomp.rs`); off only for
    /// `--security-opt seccomp=unconfined`.
    pub seccomp: bool,
    /// `--ulimit`s, set on the step's process before its program starts.
    #[serde(default)]
    pub ulimits: Vec<crate::ulimit::Ulimit>,
}

/// The sink of a spec that arrived in the helper: output flows through the
/// helper's own stdout and stderr instead.
fn discard_output() -> OutputSink {
    Box::new(|_, _| {})
}

impl RunSpec {
    /// Whether the caller asked for the step to stop.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl std::fmt::Debug for RunSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("lowers", &self.lowers)
            .field("scratch_dir", &self.scratch_dir)
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("hostname", &self.hostname)
            .field("network", &self.network)
            .field("mounts", &self.mounts.len())
            .finish_non_exhaustive()
    }
}

/// How the step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// How the step's root filesystem was provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotMethod {
    /// Overlayfs over the lowers, with a fresh upperdir.
    Overlay,
    /// Overlayfs could not be mounted here: the lowers were copied into a
    /// scratch root and the result is diffed by walking and comparing.
    Copy,
}
