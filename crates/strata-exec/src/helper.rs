//! The helper process: the part of a step that runs in its own namespaces.
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

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use crate::snapshot::{self, Mode};
use crate::spec::{ExitStatus, Mount, Network, SnapshotMethod};

/// The hidden first argument that turns a strata process into a helper.
pub(crate) const HELPER_ARG: &str = "__strata-exec-helper";

static HELPER_EXE: OnceLock<PathBuf> = OnceLock::new();

/// Uses `exe` instead of `/proc/self/exe` as the helper binary. For test
/// harnesses and embedders whose `main` cannot call [`maybe_run_helper`];
/// `exe` must call it first thing. The first call wins.
pub fn set_helper_exe(exe: PathBuf) {
    let _ = HELPER_EXE.set(exe);
}

/// Environment override of the helper binary, for test suites of other
/// crates (whose harness cannot call [`maybe_run_helper`]): point it at the
/// `strata` binary or at `strata-exec-helper`.
pub const HELPER_ENV: &str = "STRATA_EXEC_HELPER";

pub(crate) fn helper_exe() -> PathBuf {
    if let Some(p) = HELPER_EXE.get() {
        return p.clone();
    }
    match std::env::var_os(HELPER_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("/proc/self/exe"),
    }
}

/// Must be the first thing `main` calls: when this process was started as a
/// step helper, runs it and exits; otherwise returns immediately.
pub fn maybe_run_helper() {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == HELPER_ARG) {
        std::process::exit(helper_main());
    }
}

/// The parent's instructions, sent as JSON on the helper's stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    pub lowers: Vec<PathBuf>,
    /// The step's private directory (upper, work, merged, provided files).
    pub state: PathBuf,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub hostname: String,
    pub network: Network,
    pub mounts: Vec<Mount>,
    pub shm_size: Option<u64>,
    pub mode: Mode,
    /// Testing and diagnosis: skip overlayfs and use the copying fallback.
    pub force_copy: bool,
    /// The step's stdin arrives as fd [`STDIN_FD`] (else it gets /dev/null).
    #[serde(default)]
    pub stdin_fd: bool,
    /// Run under the default seccomp filter (`crate::seccomp`).
    pub seccomp: bool,
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
/// The step's pid 1, as seen from strata's PID namespace.
pub(crate) const PID_FILE: &str = "pid";
/// Entries the helper placed only to mount over (never layer content).
pub(crate) const STUBS_FILE: &str = "stubs.json";

/// Second argument of a rootless helper: it creates its user namespace itself
/// (so it holds every capability there), writes one byte to stdout, and
/// waits for the parent to write the ID maps before the spec arrives.
pub(crate) const ROOTLESS_ARG: &str = "rootless";

/// Third argument: what the helper does.
pub(crate) const TASK_STEP: &str = "step";
/// Unpack the layer tar on stdin into the directory named by the fourth
/// argument (rootless: inside the user namespace, so owners are kept).
pub(crate) const TASK_UNPACK: &str = "unpack";
/// Remove the tree named by the fourth argument (rootless: files owned by
/// subordinate IDs can only be removed from inside the user namespace).
pub(crate) const TASK_REMOVE: &str = "remove";

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
            TASK_UNPACK => crate::unpack::unpack_into(std::io::stdin().lock(), &dir, mode),
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
                // Reported to the parent, which captures this stream.
                let _ = writeln!(std::io::stderr(), "{e}");
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
    let result = match helper_inner(&spec, &mut method, &mut fallback_reason) {
        Ok(status) => HelperResult::Exited {
            status,
            method: method.unwrap_or(SnapshotMethod::Overlay),
            fallback_reason,
        },
        Err(message) => HelperResult::Failed { message, method },
    };
    let written = serde_json::to_vec(&result)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(spec.state.join(RESULT_FILE), bytes));
    match written {
        Ok(()) => 0,
        Err(e) => {
            // The parent reports a missing result; this line on the helper's
            // stderr (the step's output stream) says why.
            let _ = writeln!(
                std::io::stderr(),
                "strata step helper: cannot write the result: {e}"
            );
            71
        }
    }
}

fn err<E: std::fmt::Display>(what: impl std::fmt::Display) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// A stub the step's root needs so something can be mounted over it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Stub {
    /// Relative to the image root.
    pub path: PathBuf,
    pub dir: bool,
}

/// The files the runtime provides in every step (bind-mounted from `state`).
pub(crate) const PROVIDED_FILES: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

fn mount_is_file(m: &Mount) -> bool {
    match m {
        Mount::Secret { .. } | Mount::Ssh { .. } => true,
        Mount::Bind { source, .. } | Mount::Volume { source, .. } => std::fs::metadata(source)
            .map(|m| !m.is_dir())
            .unwrap_or(false),
        Mount::Cache { .. } | Mount::Tmpfs { .. } => false,
    }
}

pub(crate) fn rel_target(target: &str) -> Result<PathBuf, String> {
    let rel = Path::new(target.trim_start_matches('/'));
    match snapshot::normal_components(rel) {
        Some(c) if !c.is_empty() => Ok(c.iter().collect()),
        _ => Err(format!(
            "mount target {target:?} must be an absolute path below /"
        )),
    }
}

fn stub_list(spec: &HelperSpec) -> Result<Vec<Stub>, String> {
    let mut stubs: Vec<Stub> = ["dev", "proc", "sys"]
        .iter()
        .map(|p| Stub {
            path: PathBuf::from(p),
            dir: true,
        })
        .chain(PROVIDED_FILES.iter().map(|p| Stub {
            path: PathBuf::from(p),
            dir: false,
        }))
        .collect();
    for m in &spec.mounts {
        stubs.push(Stub {
            path: rel_target(m.target())?,
            dir: !mount_is_file(m),
        });
    }
    Ok(stubs)
}

/// Creates the stubs layer: each stub and its parent directories as real
/// directories (so no mount ever follows an image symlink), with the parents'
/// mode and ownership copied from the image so the merged view is unchanged.
fn make_stub_layer(dir: &Path, lowers: &[PathBuf], stubs: &[Stub]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(err(dir.display()))?;
    for stub in stubs {
        let mut rel = PathBuf::new();
        let comps: Vec<_> = stub.path.components().collect();
        for (i, c) in comps.iter().enumerate() {
            rel.push(c);
            let on_disk = dir.join(&rel);
            let last = i + 1 == comps.len();
            if std::fs::symlink_metadata(&on_disk).is_ok() {
                continue;
            }
            let image = snapshot::lookup(lowers, &rel);
            if last && !stub.dir {
                std::fs::File::create(&on_disk).map_err(err(on_disk.display()))?;
            } else {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&on_disk)
                    .map_err(err(on_disk.display()))?;
            }
            // Owner, mode, xattrs and times of the image's own entry, so
            // the merged view (and anything copied up from it) is unchanged.
            if let Some(found) = image.filter(|f| f.meta.is_dir() == (!last || stub.dir)) {
                crate::copy::copy_metadata(&found.path, &on_disk, &found.meta)
                    .map_err(err(on_disk.display()))?;
            }
        }
    }
    Ok(())
}

fn helper_inner(
    spec: &HelperSpec,
    method: &mut Option<SnapshotMethod>,
    fallback_reason: &mut Option<String>,
) -> Result<ExitStatus, String> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    if spec.network == Network::None {
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

    let state = &spec.state;
    let stubs = stub_list(spec)?;
    let stub_dir = state.join("s");
    make_stub_layer(&stub_dir, &spec.lowers, &stubs)?;
    std::fs::write(
        state.join(STUBS_FILE),
        serde_json::to_vec(&stubs).map_err(err("stubs"))?,
    )
    .map_err(err("write stubs list"))?;

    let merged = state.join("merged");
    let upper = state.join("upper");
    std::fs::create_dir_all(&merged).map_err(err(merged.display()))?;
    let overlay = if spec.force_copy {
        Err("forced by the caller".to_string())
    } else {
        mount_overlay(spec, &stub_dir, &merged)
    };
    match overlay {
        Ok(()) => *method = Some(SnapshotMethod::Overlay),
        Err(reason) => {
            *method = Some(SnapshotMethod::Copy);
            *fallback_reason = Some(reason);
            // Start the fallback from scratch: the overlay attempt may have
            // left an empty upperdir behind.
            let _ = std::fs::remove_dir_all(&upper);
            std::fs::create_dir_all(&upper).map_err(err(upper.display()))?;
            for lower in spec.lowers.iter().rev() {
                crate::copy::apply_lower(lower, &upper)
                    .map_err(err(format!("copy {}", lower.display())))?;
            }
            crate::copy::apply_lower(&stub_dir, &upper).map_err(err("copy mount stubs"))?;
            mount(
                Some(&upper),
                &merged,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err("bind the copied root"))?;
        }
    }

    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(err("pipe"))?;
    // SAFETY: the helper process is single-threaded (it runs before the host
    // program starts any thread), so the child may allocate and run any code.
    match unsafe { nix::unistd::fork() }.map_err(err("fork"))? {
        ForkResult::Child => {
            drop(err_r);
            let e = match child(spec, &merged) {
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

/// Mounts the overlay. Lowers are reached through one-character symlinks in
/// `state/l` with the helper's working directory there, so the `lowerdir=`
/// option (limited to a page) stays short for hundreds of layers.
/// Lowers passed to overlayfs besides the stubs layer.
const MAX_LOWERS: usize = 498;

fn mount_overlay(spec: &HelperSpec, stub_dir: &Path, merged: &Path) -> Result<(), String> {
    let state = &spec.state;
    let links = state.join("l");
    std::fs::create_dir_all(&links).map_err(err(links.display()))?;
    std::fs::create_dir_all(state.join("upper")).map_err(err("upper"))?;
    std::fs::create_dir_all(state.join("work")).map_err(err("work"))?;
    let mut names = vec!["s".to_string()];
    std::os::unix::fs::symlink(stub_dir, links.join("s")).map_err(err("link stubs"))?;
    // The kernel stacks at most 500 layers (OVL_MAX_STACK); the stubs take
    // one. Deeper images get their bottom layers flattened into one
    // directory (a copy, in the step's scratch space).
    let mut lowers: Vec<PathBuf> = spec.lowers.clone();
    if lowers.len() > MAX_LOWERS {
        let flat = state.join("flat");
        std::fs::create_dir_all(&flat).map_err(err(flat.display()))?;
        for lower in lowers[MAX_LOWERS - 1..].iter().rev() {
            crate::copy::apply_lower(lower, &flat)
                .map_err(err(format!("flatten {}", lower.display())))?;
        }
        lowers.truncate(MAX_LOWERS - 1);
        lowers.push(flat);
    }
    for (i, lower) in lowers.iter().enumerate() {
        let name = format!("{i:x}");
        std::os::unix::fs::symlink(lower, links.join(&name))
            .map_err(err(format!("link {}", lower.display())))?;
        names.push(name);
    }
    let mut data = format!(
        "lowerdir={},upperdir=../upper,workdir=../work",
        names.join(":")
    );
    match spec.mode {
        Mode::Rootless => data.push_str(",userxattr"),
        // The differ reads whole files from the upperdir and treats
        // directories as merged: no metadata-only copy-ups or redirects.
        Mode::Rootful => data.push_str(",index=off,metacopy=off,redirect_dir=off"),
    }
    if data.len() >= 4000 {
        return Err(format!(
            "{} layers exceed the overlay option size",
            spec.lowers.len()
        ));
    }
    let cwd = std::env::current_dir().map_err(err("getcwd"))?;
    std::env::set_current_dir(&links).map_err(err(links.display()))?;
    let res = mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    );
    std::env::set_current_dir(cwd).map_err(err("chdir back"))?;
    res.map_err(err("mount overlay"))
}

fn bind(src: &Path, dst: &Path, readonly: bool) -> Result<(), String> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err(format!("bind {} on {}", src.display(), dst.display())))?;
    if readonly {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err(format!("make {} read-only", dst.display())))?;
    }
    Ok(())
}

fn setup_dev(root: &Path, shm_size: Option<u64>) -> Result<(), String> {
    let dev = root.join("dev");
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(err("mount /dev"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        std::fs::File::create(&target).map_err(err(target.display()))?;
        bind(&Path::new("/dev").join(node), &target, false)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(err("mkdir /dev/pts"))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(err("mount /dev/pts"))?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx")).map_err(err("/dev/ptmx"))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(err("mkdir /dev/shm"))?;
    let shm_opts = format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20));
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(shm_opts.as_str()),
    )
    .map_err(err("mount /dev/shm"))?;
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(name)).map_err(err(format!("/dev/{name}")))?;
    }
    Ok(())
}

fn setup_mounts(spec: &HelperSpec, root: &Path) -> Result<(), String> {
    let secrets = spec.state.join("secrets");
    for (i, m) in spec.mounts.iter().enumerate() {
        let target = root.join(rel_target(m.target())?);
        match m {
            Mount::Cache {
                dir,
                readonly,
                uid,
                gid,
                mode,
                ..
            } => {
                // First use: give the new cache directory its requested owner.
                if std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))
                        .map_err(err("chown cache"))?;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode & 0o7777))
                        .map_err(err("chmod cache"))?;
                }
                bind(dir, &target, *readonly)?
            }
            Mount::Bind {
                source, readwrite, ..
            } => {
                if *readwrite && std::fs::metadata(source).is_ok_and(|m| m.is_dir()) {
                    // Writes are discarded: an overlay with a throwaway upper
                    // on a tmpfs (so no trace reaches the disk).
                    let scratch = spec.state.join(format!("bind{i}"));
                    std::fs::create_dir_all(&scratch).map_err(err(scratch.display()))?;
                    mount(
                        Some("tmpfs"),
                        &scratch,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("mode=700"),
                    )
                    .map_err(err("tmpfs for rw bind"))?;
                    for d in ["u", "w"] {
                        std::fs::create_dir(scratch.join(d)).map_err(err("rw bind scratch"))?;
                    }
                    let opts = format!(
                        "lowerdir={},upperdir={},workdir={}",
                        source.display(),
                        scratch.join("u").display(),
                        scratch.join("w").display()
                    );
                    mount(
                        Some("overlay"),
                        &target,
                        Some("overlay"),
                        MsFlags::empty(),
                        Some(opts.as_str()),
                    )
                    .map_err(err(format!("writable bind of {}", source.display())))?;
                } else {
                    bind(source, &target, !*readwrite)?;
                }
            }
            Mount::Volume {
                source, readonly, ..
            } => bind(source, &target, *readonly)?,
            Mount::Tmpfs { size, .. } => {
                let opts = size.map(|s| format!("size={s}"));
                mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    opts.as_deref(),
                )
                .map_err(err(format!("tmpfs on {}", m.target())))?;
            }
            Mount::Secret {
                data,
                uid,
                gid,
                mode,
                ..
            } => {
                if std::fs::symlink_metadata(&secrets).is_err() {
                    std::fs::create_dir_all(&secrets).map_err(err("secrets dir"))?;
                    mount(
                        Some("tmpfs"),
                        &secrets,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=700"),
                    )
                    .map_err(err("secrets tmpfs"))?;
                }
                let file = secrets.join(i.to_string());
                std::fs::write(&file, data).map_err(err("write secret"))?;
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                    .map_err(err("chown secret"))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode & 0o7777))
                    .map_err(err("chmod secret"))?;
                bind(&file, &target, true)?;
            }
            Mount::Ssh { socket, .. } => bind(socket, &target, false)?,
        }
    }
    Ok(())
}

/// Docker's masked and read-only kernel paths: what a build step has no
/// business reading or changing about the host.
const MASKED: [&str; 8] = [
    "proc/kcore",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/latency_stats",
    "proc/scsi",
    "proc/acpi",
    "sys/firmware",
];
const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

fn mask_kernel_files(root: &Path) -> Result<(), String> {
    for rel in MASKED {
        let p = root.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
            .map_err(err(format!("mask /{rel}")))?,
            Ok(_) => bind(Path::new("/dev/null"), &p, false)?,
            // Not present on this kernel: nothing to hide.
            Err(_) => {}
        }
    }
    for rel in READ_ONLY {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            bind(&p, &p, true)?;
        }
    }
    Ok(())
}

/// Brings the loopback interface up in a fresh network namespace.
fn loopback_up() -> Result<(), String> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err("socket"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the named interface's flags into `req`, a
    // valid ifreq that outlives the call; the fd is a live socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!("get lo flags: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifr_ifru is a union; SIOCGIFFLAGS just filled its flags member.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!("bring lo up: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Docker's default capability set; everything else leaves the bounding set.
const DEFAULT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

fn drop_capabilities() -> Result<(), String> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if DEFAULT_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a capability this kernel does not know.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(format!("drop capability {cap}: {e}"));
            }
        }
    }
    // SAFETY: clears the ambient set; integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// The step's pid 1: finishes the root, pivots into it and execs the command.
fn child(spec: &HelperSpec, merged: &Path) -> Result<std::convert::Infallible, String> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(err("pdeathsig"))?;
    // pivot_root moves the root of every process in the mount namespace: the
    // step gets a namespace of its own (a copy of the helper's, overlay
    // included) so the helper keeps the host's view to write its result.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(err("unshare the step's mount namespace"))?;
    // Its own session: terminal signals (Ctrl-C) go to strata, which decides.
    let _ = nix::unistd::setsid();
    nix::unistd::sethostname(&spec.hostname).map_err(err("sethostname"))?;
    if spec.network == Network::None {
        loopback_up()?;
    }
    mount(
        Some("proc"),
        &merged.join("proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(err("mount /proc"))?;
    setup_dev(merged, spec.shm_size)?;
    let sys = merged.join("sys");
    let ro = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY;
    if mount(Some("sysfs"), &sys, Some("sysfs"), ro, None::<&str>).is_err() {
        // sysfs needs a network namespace we own; rootless with the host's
        // network gets a read-only view of the host's instead.
        bind(Path::new("/sys"), &sys, true)?;
    }
    for f in PROVIDED_FILES {
        let name = f.trim_start_matches("etc/");
        bind(&spec.state.join(name), &merged.join(f), false)?;
    }
    setup_mounts(spec, merged)?;
    mask_kernel_files(merged)?;

    std::env::set_current_dir(merged).map_err(err("chdir to root"))?;
    nix::unistd::pivot_root(".", ".").map_err(err("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(err("detach the old root"))?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let id = crate::user::resolve(&spec.user, &passwd, &group)?;

    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    mkdir_all_in_root(Path::new(&spec.cwd), 0)
        .map_err(err(format!("create WORKDIR {}", spec.cwd)))?;
    std::env::set_current_dir(&spec.cwd).map_err(err(format!("chdir to {}", spec.cwd)))?;

    let mut env: Vec<String> = spec.env.clone();
    let has = |env: &[String], k: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOSTNAME") {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if !has(&env, "HOME") {
        env.push(format!(
            "HOME={}",
            id.home.clone().unwrap_or_else(|| "/".into())
        ));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let argv0 = spec.argv.first().ok_or("empty command")?;
    let program = resolve_program(argv0, &path_var)?;

    if spec.stdin_fd {
        // SAFETY: dup2 and close on plain integers; fd STDIN_FD was placed
        // by the parent for this process and nothing else here owns it.
        if unsafe { libc::dup2(STDIN_FD, 0) } < 0 {
            return Err(format!("stdin: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: as above; the step must not inherit a second copy.
        unsafe { libc::close(STDIN_FD) };
    } else {
        let devnull = std::fs::File::open("/dev/null").map_err(err("/dev/null"))?;
        nix::unistd::dup2_stdin(&devnull).map_err(err("stdin"))?;
    }

    drop_capabilities()?;
    nix::sys::prctl::set_no_new_privs().map_err(err("no_new_privs"))?;
    let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if setgroups_allowed {
        let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(err("setgroups"))?;
    }
    nix::unistd::setgid(Gid::from_raw(id.gid)).map_err(err(format!("setgid {}", id.gid)))?;
    nix::unistd::setuid(Uid::from_raw(id.uid)).map_err(err(format!("setuid {}", id.uid)))?;
    // Last, so that our own setup above is not filtered.
    if spec.seccomp {
        crate::seccomp::install(&crate::seccomp::default_filters()?)?;
    }

    let args: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| cstring(a))
        .collect::<Result<_, _>>()?;
    let envs: Vec<CString> = env.iter().map(|a| cstring(a)).collect::<Result<_, _>>()?;
    let prog = CString::new(program.as_os_str().as_bytes())
        .map_err(|_| "program path contains NUL".to_string())?;
    let e = nix::unistd::execve(&prog, &args, &envs).map_err(err(format!("exec {argv0}")));
    match e {
        Ok(never) => match never {},
        Err(e) => Err(e),
    }
}

/// `mkdir -p` after pivot_root, following symlinks the way the step would
/// (they can only resolve inside the new root), including dangling ones,
/// whose targets are created.
fn mkdir_all_in_root(path: &Path, depth: u32) -> std::io::Result<()> {
    if depth > 40 {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut cur = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => cur.push(n),
            std::path::Component::ParentDir => {
                cur.pop();
                continue;
            }
            _ => continue,
        }
        match std::fs::metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(_) => match std::fs::symlink_metadata(&cur) {
                Ok(l) if l.file_type().is_symlink() => {
                    let target = std::fs::read_link(&cur)?;
                    let abs = cur.parent().unwrap_or(Path::new("/")).join(target);
                    mkdir_all_in_root(&abs, depth + 1)?;
                }
                _ => std::fs::DirBuilder::new().mode(0o755).create(&cur)?,
            },
        }
    }
    Ok(())
}

fn resolve_program(argv0: &str, path: &str) -> Result<PathBuf, String> {
    if argv0.contains('/') {
        return Ok(PathBuf::from(argv0));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(argv0);
        if let Ok(m) = std::fs::metadata(&candidate)
            && m.is_file()
            && m.permissions().mode() & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!(
        "exec: {argv0:?}: executable file not found in $PATH"
    ))
}
