//! `--isolation chroot`, the parent side: a step for places where neither
//! `unshare(2)` nor `mount(2)` is allowed (a container with Docker's default
//! seccomp profile and capabilities), needing only what such a container
//! grants root: `chroot`, `chown`, `mknod`, `setuid`/`setgid`.
//!
//! The lowers are copied (never hard-linked: a step could write through a
//! link into a stored snapshot) into `state/upper`, the runtime's files are
//! placed in it, the step process ([`crate::chroot_step`]) chroots into it,
//! and afterwards the runtime's files are taken back out, leaving the root
//! as the namespaces executor's mounts would have left it. The copy
//! fallback's differ ([`Upper::changes`] with
//! [`SnapshotMethod::Copy`]) then finds the step's changes, so the layer is
//! the one the namespaces executor writes for the same step.
//!
//! What a mount would provide is provided by copying, as far as that can
//! stand in for it:
//! - `/dev`: `null`, `zero`, `full`, `random`, `urandom` and `tty` made with
//!   `mknod`, an empty `/dev/shm`; no devpts, no `/dev/fd` (it needs
//!   `/proc`). Emptied afterwards, as the tmpfs it stands for would be.
//! - `/proc`: no live procfs (mounting one needs `CAP_SYS_ADMIN`). Static
//!   copies of this container's [`PROC_FILES`] (CPU and memory information,
//!   kernel version and limits), which `nproc`-style probes, Python, Node and
//!   compilers read; `/proc/self` and per-process files are missing, so
//!   tools that need `/proc/self/exe` or `/proc/self/fd` fail.
//! - `/sys`: an empty directory.
//! - `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`: the step's own, as
//!   with namespaces; changes to them stay out of the layer.
//! - `RUN --mount=type=bind` (a copy of the source: writes are possible but
//!   discarded, also for read-only binds) and `type=tmpfs` (an empty
//!   directory); `type=cache` (copied in, and back after the step),
//!   `type=secret` (a file placed for the step) and `type=ssh` (a socket
//!   strata forwards to the agent): see [`crate::chroot_mounts`]. Volumes
//!   (`strata run -v`, whose writes must reach the host as they happen)
//!   need `mount(2)` and are refused with an error naming them.
//!
//! The step shares the container's PID, network and UTS namespaces: it sees
//! no hostname of its own, `RUN --network=none` is refused, and processes it
//! leaves in its process group (and where a step cgroup can be made, in its
//! cgroup: see [`crate::cgroup`]) are killed when it exits. A chroot keeps
//! out mistakes, not a hostile root step: the container is the boundary.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use strata_oci::apply::remove_any;

use crate::chroot_mounts::{PlacedSecret, SshForward, copy_cache_back, copy_cache_in};
use crate::diff::Upper;
use crate::error::ExecError;
use crate::launch::{chroot_command, spawn};
use crate::overlay;
use crate::protocol::{ChrootSpec, Stub, provided_files, rel_target};
use crate::spec::{CacheSharing, ExitStatus, Mount, Network, RunSpec, SnapshotMethod};

/// Files of this container's `/proc` copied into the step's `/proc`: the
/// machine's description and limits, the same for every process. Missing
/// ones (another kernel) are skipped.
pub(crate) const PROC_FILES: [&str; 17] = [
    "cpuinfo",
    "meminfo",
    "stat",
    "version",
    "loadavg",
    "uptime",
    "filesystems",
    "sys/kernel/osrelease",
    "sys/kernel/ostype",
    "sys/kernel/version",
    "sys/kernel/pid_max",
    "sys/kernel/ngroups_max",
    "sys/kernel/cap_last_cap",
    "sys/fs/nr_open",
    "sys/vm/overcommit_memory",
    "sys/net/core/somaxconn",
    "sys/kernel/random/boot_id",
];

/// Device nodes made in the step's `/dev`: (name, major, minor), all 0666 as
/// Docker makes them.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn setup(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ExecError {
    move |e| ExecError::Setup(format!("--isolation chroot: {what}: {e}"))
}

/// Runs one step chrooted into a copy of its lowers; see the module docs.
/// The caller has checked the spec's command, working directory and mount
/// targets.
pub(crate) fn run(
    mut spec: RunSpec,
    cgroup_parent: Option<&crate::CgroupParent>,
) -> Result<(ExitStatus, Upper), ExecError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ExecError::Setup(format!(
            "--isolation chroot needs root with CAP_SYS_CHROOT; strata runs as uid {}",
            nix::unistd::geteuid()
        )));
    }
    if spec.network == Network::None {
        return Err(ExecError::Invalid(
            "RUN --network=none needs a network namespace, which --isolation chroot cannot \
             create (unshare is not allowed here)"
                .into(),
        ));
    }
    if let Some(volume) = spec
        .mounts
        .iter()
        .find(|m| matches!(m, Mount::Volume { .. }))
    {
        return Err(ExecError::Invalid(format!(
            "a volume (-v) at {} needs mount(2), which --isolation chroot cannot use (it needs \
             CAP_SYS_ADMIN); run where --isolation namespaces works, or copy the files in",
            volume.target()
        )));
    }
    let state = tempfile::Builder::new()
        .prefix("step-")
        .tempdir_in(&spec.scratch_dir)
        .map_err(io_err(&spec.scratch_dir))?
        .keep();
    let root = state.join("upper");
    // From here on the Upper owns the directory and removes it on every path.
    let mut upper = Upper {
        state: state.clone(),
        upper: root.clone(),
        lowers: spec.lowers.clone(),
        method: SnapshotMethod::Copy,
        // The mounts' stand-ins made in the root are taken back out after
        // the step, but the directories they were made in keep the new
        // mtime, and the differ keeps those as the namespaces executor's
        // layer has them (`Stub::touched_parent`).
        stubs: Vec::new(),
        marked_dirs: false,
    };
    for m in &spec.mounts {
        let stub = Stub::for_mount(m).map_err(ExecError::Invalid)?;
        upper.stubs.push(stub);
    }
    std::fs::create_dir(&root).map_err(io_err(&root))?;
    let locks = crate::step_parent::lock_cache_mounts(&mut spec.mounts, &state)?;
    for lower in spec.lowers.iter().rev() {
        crate::flatten::apply_lower_unlinked(lower, &root)
            .map_err(setup(format!("copying {}", lower.display())))?;
    }
    // Without user xattrs here, a directory the step removed and made again
    // is recorded as emptied and refilled (same tree, other layer bytes).
    upper.marked_dirs = mark_dirs(&root).is_ok();
    let mut provided = Provided {
        root: root.clone(),
        lowers: spec.lowers.clone(),
        paths: Vec::new(),
        made_dirs: Vec::new(),
        caches: Vec::new(),
        secrets: Vec::new(),
        agents: Vec::new(),
    };
    let status = provided
        .provide(&spec)
        .and_then(|()| run_chrooted(&mut spec, &root, cgroup_parent));
    // Whatever the step's exit, as a mount would have kept its writes.
    let mounts_back = match &status {
        Ok(_) => provided.mounts_back(),
        Err(_) => Ok(()),
    };
    drop(locks);
    // Taken back on every path: a failed step's root is dropped with the
    // Upper anyway, but a successful one is diffed.
    let restored = provided.take_back();
    let status = status?;
    mounts_back?;
    restored.map_err(setup("taking the runtime's files back out of the root"))?;
    Ok((status, upper))
}

/// Starts the step process, streams its output, and waits for it.
fn run_chrooted(
    spec: &mut RunSpec,
    root: &Path,
    cgroup_parent: Option<&crate::CgroupParent>,
) -> Result<ExitStatus, ExecError> {
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ExecError::HelperIo {
            what: "creating the error pipe",
            source: e.into(),
        })?;
    // At least 10, so placing the step's stdin on fd 3 cannot clobber it.
    let low = err_w;
    let err_w = nix::fcntl::fcntl(&low, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
            unsafe { OwnedFd::from_raw_fd(fd) }
        })
        .map_err(|e| ExecError::HelperIo {
            what: "placing the error pipe",
            source: e.into(),
        })?;
    // Every copy of the write end but the step's must be closed, or reading
    // the pipe never ends.
    drop(low);
    let input = serde_json::to_vec(&ChrootSpec {
        step: &*spec,
        root: root.to_path_buf(),
        stdin_fd: spec.stdin.is_some(),
    })
    .map_err(ExecError::Encode)?;
    // The step joins its cgroup between fork and exec; whatever it leaves
    // there (also what left its process group) is killed with it.
    let cgroup = crate::cgroup::StepCgroup::for_step(root.parent().unwrap_or(root), cgroup_parent)?;
    let step_stdin = spec.stdin.take();
    let mut cmd = chroot_command(
        step_stdin.as_ref().map(AsRawFd::as_raw_fd),
        err_w.as_raw_fd(),
    );
    if let Some(cg) = &cgroup {
        cg.join_on_exec(&mut cmd);
    }
    let mut child = spawn(&mut cmd)?;
    drop(step_stdin);
    drop(err_w);
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    // For `strata stop`/`kill` (see `signal`): the step is this child. Its
    // state directory holds `root` (the step's upper directory).
    if let Some(state) = root.parent() {
        let _ = std::fs::write(
            state.join(crate::protocol::PID_FILE),
            child.id().to_string(),
        );
    }
    let sent = child
        .stdin
        .take()
        .map(|mut w| w.write_all(&input))
        .unwrap_or(Ok(()));
    if let Err(source) = sent {
        let _ = child.kill();
        let _ = child.wait();
        return Err(ExecError::HelperIo {
            what: "sending the step",
            source,
        });
    }

    let (rx, readers) = crate::step_parent::read_outputs(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let mut cancelled = false;
    let kill_group = || {
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        if let Some(cg) = &cgroup {
            cg.kill_all();
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((stream, bytes)) => (spec.output)(stream, &bytes),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !cancelled && spec.cancelled() {
            cancelled = true;
            kill_group();
        }
        // The step has exited but something it started keeps the pipes
        // open: with no PID namespace to end with it, end its group.
        if let Ok(Some(_)) = child.try_wait() {
            kill_group();
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|source| ExecError::HelperIo {
        what: "waiting for the step",
        source,
    })?;
    // Whatever the step left running in its process group (and with a
    // cgroup, anywhere) goes with it, as it would with its PID namespace.
    kill_group();
    if let Some(cg) = cgroup {
        cg.finish();
    }
    if cancelled {
        return Err(ExecError::Cancelled);
    }
    let mut message = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut message);
    if !message.is_empty() {
        return Err(ExecError::Setup(message));
    }
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitStatus::Code(c),
        (None, Some(s)) => ExitStatus::Signal(s),
        (None, None) => ExitStatus::Code(-1),
    })
}

/// The runtime's files in the step's root, and how to take them back out.
struct Provided {
    root: PathBuf,
    lowers: Vec<PathBuf>,
    /// Image paths replaced by the runtime, in the order they were placed.
    paths: Vec<PathBuf>,
    /// Directories made to hold them, in the order they were made.
    made_dirs: Vec<PathBuf>,
    /// Writable cache mounts: where in the root, the cache directory, and
    /// its sharing, to be copied back after the step.
    caches: Vec<(PathBuf, PathBuf, CacheSharing)>,
    /// Secret files placed, with where in the root.
    secrets: Vec<(PathBuf, PlacedSecret)>,
    /// SSH agent forwarders, stopped when dropped.
    agents: Vec<SshForward>,
}

impl Provided {
    fn provide(&mut self, spec: &RunSpec) -> Result<(), ExecError> {
        let dev = self.fresh_dir(Path::new("dev"), 0o755)?;
        for (name, major, minor) in DEVICES {
            let p = dev.join(name);
            nix::sys::stat::mknod(
                &p,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(major, minor),
            )
            .map_err(|e| {
                ExecError::Setup(format!(
                    "--isolation chroot: making /dev/{name}: mknod: {e} (needs CAP_MKNOD and a \
                     device cgroup that allows it, as Docker's default does)"
                ))
            })?;
            chmod(&p, 0o666)?;
        }
        let shm = dev.join("shm");
        std::fs::create_dir(&shm).map_err(io_err(&shm))?;
        chmod(&shm, 0o1777)?;

        let proc = self.fresh_dir(Path::new("proc"), 0o555)?;
        for rel in PROC_FILES {
            let Ok(data) = std::fs::read(Path::new("/proc").join(rel)) else {
                continue;
            };
            let to = proc.join(rel);
            if let Some(parent) = to.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o555)
                    .create(parent)
                    .map_err(io_err(parent))?;
            }
            std::fs::write(&to, data).map_err(io_err(&to))?;
            chmod(&to, 0o444)?;
        }
        self.fresh_dir(Path::new("sys"), 0o555)?;

        let mut hosts = format!(
            "127.0.0.1\tlocalhost {}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            spec.hostname
        );
        for (name, ip) in &spec.extra_hosts {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
        let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for (rel, content) in
            provided_files(spec)
                .iter()
                .zip([hosts, resolv, format!("{}\n", spec.hostname)])
        {
            let p = self.fresh(Path::new(rel))?;
            std::fs::write(&p, content).map_err(io_err(&p))?;
            chmod(&p, 0o644)?;
        }

        for m in &spec.mounts {
            let rel = rel_target(m.target()).map_err(ExecError::Invalid)?;
            match m {
                Mount::Bind { source, .. } => {
                    let meta = std::fs::metadata(source).map_err(io_err(source))?;
                    let to = self.fresh(&rel)?;
                    let copied = if meta.is_dir() {
                        std::fs::create_dir(&to)
                            .and_then(|()| crate::flatten::apply_lower_unlinked(source, &to))
                            .and_then(|()| crate::flatten::copy_metadata(source, &to, &meta))
                    } else {
                        crate::flatten::copy_entry(source, &to, &meta)
                    };
                    copied.map_err(setup(format!(
                        "copying the bind source {} to {}",
                        source.display(),
                        m.target()
                    )))?;
                }
                Mount::Tmpfs { .. } => {
                    self.fresh_dir(&rel, 0o1777)?;
                }
                Mount::Cache {
                    dir,
                    sharing,
                    readonly,
                    uid,
                    gid,
                    mode,
                    ..
                } => {
                    let to = self.fresh(&rel)?;
                    copy_cache_in(dir, &to, *sharing, (*uid, *gid, *mode))?;
                    if !*readonly {
                        self.caches.push((rel, dir.clone(), *sharing));
                    }
                }
                Mount::Secret {
                    target,
                    data,
                    uid,
                    gid,
                    mode,
                } => {
                    let to = self.fresh(&rel)?;
                    let placed = PlacedSecret::place(target, &to, data, (*uid, *gid, *mode))?;
                    self.secrets.push((rel, placed));
                }
                Mount::Ssh {
                    target,
                    socket,
                    uid,
                    gid,
                    mode,
                } => {
                    let to = self.fresh(&rel)?;
                    let agent = SshForward::start(target, &to, socket, (*uid, *gid, *mode))?;
                    self.agents.push(agent);
                }
                // Refused by `run` before anything was copied.
                Mount::Volume { .. } => {}
            }
        }
        Ok(())
    }

    /// After the step: stops the SSH forwarders, checks that every secret
    /// is still only at its place, and copies writable caches back.
    fn mounts_back(&mut self) -> Result<(), ExecError> {
        self.agents.clear();
        for (rel, secret) in &self.secrets {
            secret.check_in_place(inside(&self.root, rel).as_deref())?;
        }
        for (rel, dir, sharing) in &self.caches {
            copy_cache_back(inside(&self.root, rel).as_deref(), dir, *sharing)?;
        }
        Ok(())
    }

    /// Clears `rel` for the runtime (its parents made real directories) and
    /// returns its path on disk; taken back by [`Provided::take_back`].
    fn fresh(&mut self, rel: &Path) -> Result<PathBuf, ExecError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.real_dirs(parent)?;
        let name = rel.file_name().ok_or_else(|| {
            ExecError::Invalid(format!("{} names no entry below /", rel.display()))
        })?;
        let p = dir.join(name);
        remove_any(&p).map_err(io_err(&p))?;
        self.paths.push(rel.to_path_buf());
        Ok(p)
    }

    /// [`Provided::fresh`], then an empty directory there with `mode`.
    fn fresh_dir(&mut self, rel: &Path, mode: u32) -> Result<PathBuf, ExecError> {
        let p = self.fresh(rel)?;
        std::fs::create_dir(&p).map_err(io_err(&p))?;
        chmod(&p, mode)?;
        Ok(p)
    }

    /// Makes every component of `rel` a real directory, never following a
    /// symlink out of the root: missing ones are made (0755, as the
    /// namespaces executor's mount stubs), non-directories replaced (their
    /// image entries come back in [`Provided::take_back`]).
    fn real_dirs(&mut self, rel: &Path) -> Result<PathBuf, ExecError> {
        let mut cur = self.root.clone();
        let mut r = PathBuf::new();
        for c in rel.components() {
            cur.push(c);
            r.push(c);
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => remove_any(&cur).map_err(io_err(&cur))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&cur)(e)),
            }
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&cur)
                .map_err(io_err(&cur))?;
            chmod(&cur, 0o755)?;
            self.made_dirs.push(r.clone());
        }
        Ok(cur)
    }

    /// Puts the image's own entries back where the runtime placed its
    /// files, and removes the directories made for them that the step left
    /// empty, so the differ sees only what the step did.
    fn take_back(&mut self) -> io::Result<()> {
        for rel in std::mem::take(&mut self.paths).iter().rev() {
            restore(&self.root, &self.lowers, rel)?;
        }
        for rel in std::mem::take(&mut self.made_dirs).iter().rev() {
            let Some(p) = inside(&self.root, rel) else {
                continue;
            };
            let empty = std::fs::read_dir(&p).is_ok_and(|mut d| d.next().is_none());
            if empty && std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                std::fs::remove_dir(&p)?;
                restore(&self.root, &self.lowers, rel)?;
            }
        }
        Ok(())
    }
}

fn chmod(p: &Path, mode: u32) -> Result<(), ExecError> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err(p))
}

/// `root/rel` when every parent of it is a real directory (the step may
/// have replaced one with a symlink, which must not be followed out of the
/// root).
fn inside(root: &Path, rel: &Path) -> Option<PathBuf> {
    let mut cur = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            cur.push(c);
            if !std::fs::symlink_metadata(&cur).is_ok_and(|m| m.is_dir()) {
                return None;
            }
        }
    }
    cur.push(rel.file_name()?);
    Some(cur)
}

/// Replaces `root/rel` with what the lowers have there (nothing, an entry,
/// or a whole directory as overlayfs would present it).
fn restore(root: &Path, lowers: &[PathBuf], rel: &Path) -> io::Result<()> {
    let Some(target) = inside(root, rel) else {
        // The step replaced a parent: what it made stands, as its change.
        return Ok(());
    };
    remove_any(&target)?;
    let Some(top) = overlay::lookup(lowers, rel) else {
        return Ok(());
    };
    if !top.meta.is_dir() {
        return crate::flatten::copy_entry(&top.path, &target, &top.meta);
    }
    // Bottom-most first, each lower's directory applied over the last, as
    // the copy of the whole root was made.
    for lower in lowers.iter().rev() {
        let from = lower.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(&from) else {
            continue;
        };
        if overlay::is_whiteout(&from, &meta) || !meta.is_dir() {
            remove_any(&target)?;
            if !overlay::is_whiteout(&from, &meta) {
                crate::flatten::copy_entry(&from, &target, &meta)?;
            }
            continue;
        }
        let existing = std::fs::symlink_metadata(&target).ok();
        if overlay::is_opaque(&from) || existing.as_ref().is_some_and(|m| !m.is_dir()) {
            remove_any(&target)?;
        }
        if std::fs::symlink_metadata(&target).is_err() {
            std::fs::create_dir(&target)?;
        }
        crate::flatten::apply_lower_unlinked(&from, &target)?;
        crate::flatten::copy_metadata(&from, &target, &meta)?;
    }
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        mark_dirs(&target)?;
    }
    Ok(())
}

/// Marks `dir` and every directory below it as there before the step (see
/// [`overlay::COPIED_DIR_XATTR`]).
fn mark_dirs(dir: &Path) -> io::Result<()> {
    xattr::set(dir, overlay::COPIED_DIR_XATTR, b"")?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            mark_dirs(&entry.path())?;
        }
    }
    Ok(())
}
