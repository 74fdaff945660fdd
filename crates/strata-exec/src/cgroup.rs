//! A cgroup per step, in the parent: made before the step's first process
//! execs, filtering devices with runc's allow list ([`crate::devices`]),
//! and how every process of the step is found and killed, on every path,
//! before it is removed.
//!
//! Where: `<cgroup2 mount>/strata/<strata's pid>-ns<its PID namespace>-<step>`
//! (`<cgroup2 mount>/P/...` under `--cgroup-parent P`: [`crate::cgroup_parent`]),
//! the cgroup2 mount
//! read from `/proc/self/mountinfo` (the whole tree on a pure-v2 host,
//! `/sys/fs/cgroup/unified` on a hybrid one). The device filter is an eBPF
//! program (`BPF_PROG_TYPE_CGROUP_DEVICE`) attached to that directory with
//! `BPF_F_ALLOW_MULTI`, as runc and crun attach theirs: the kernel's
//! `devcgroup_check_permission` runs it on every open and mknod of a device
//! node by a process of the cgroup, whatever controllers are enabled, also
//! on hybrid hosts where the v1 `devices` controller is mounted too (its
//! rules are checked after the program, and cannot allow what the program
//! refused). Programs attached higher up (systemd's `DevicePolicy`) still
//! run: `ALLOW_MULTI` adds ours to theirs.
//!
//! The step's helper (or the chroot step) joins the cgroup between fork and
//! exec ([`StepCgroup::join_on_exec`]), so nothing of the step runs outside
//! it. When the step ends, is cancelled or fails, `cgroup.kill` (Linux 5.14;
//! before that, SIGKILL to every pid in `cgroup.procs` until none is left)
//! ends whatever is still in it, and the directory is removed. A cgroup that
//! a SIGKILLed strata left is emptied and removed by the next strata that
//! makes one (its name starts with a pid that no longer runs in the PID
//! namespace the name gives: `<pid>-ns<inode>-step-XXXXXX`).
//!
//! Where no cgroup can be made (rootless: a device program needs CAP_BPF
//! or CAP_SYS_ADMIN in the initial namespace; an unprivileged container
//! with a read-only `/sys/fs/cgroup`; no cgroup2 mount), steps keep the
//! fallback: no CAP_MKNOD, `nodev` mounts, and the step's PID namespace (or
//! process group, for `--isolation chroot`) to kill what it started.
//! [`support`] says which applies, once per process.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cgroup_parent::{CgroupParent, cgroup2_root};
use crate::devices::{DEFAULT_RULES, Insn, program};
use crate::error::ExecError;

/// Below the cgroup2 mount: the directory holding every step's cgroup.
const PARENT_DIR: &str = "strata";

/// Whether steps get a cgroup here, probed once per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Steps get a cgroup under this directory, with the device filter.
    Filter { parent: PathBuf },
    /// No cgroup can be made; why, in words.
    Unavailable(String),
}

impl Support {
    /// One line for the progress output: what keeps a step from the host's
    /// devices and how its processes are ended.
    pub fn describe(&self) -> String {
        match self {
            Support::Filter { parent } => format!(
                "devices: a cgroup per step under {} with runc's device allow list",
                parent.display()
            ),
            Support::Unavailable(why) => format!(
                "devices: no cgroup per step ({why}); steps get no CAP_MKNOD and nodev mounts"
            ),
        }
    }
}

/// Whether steps get a cgroup here (see the module docs). The first call
/// also removes cgroups that dead strata processes left.
pub fn support() -> &'static Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    SUPPORT.get_or_init(|| match probe() {
        Ok(parent) => {
            sweep_stale(&parent);
            Support::Filter { parent }
        }
        Err(why) => Support::Unavailable(why),
    })
}

/// Checks, before a build starts, that steps can get cgroups under
/// `parent`: makes `<cgroup2 mount>/P`, makes and removes a probe cgroup in
/// it (with the device filter, as a step's), and removes cgroups that dead
/// strata processes left there. Returns the directory.
pub fn check_parent(parent: &CgroupParent) -> Result<PathBuf, String> {
    let default_parent = match support() {
        Support::Filter { parent } => parent,
        Support::Unavailable(why) => return Err(parent.unavailable(why)),
    };
    let mount = cgroup2_root(default_parent);
    let dir = make_parent(parent, mount)
        .map_err(|e| format!("--cgroup-parent {parent}: {}", with_causes(&e)))?;
    sweep_stale(&dir);
    let probe = StepCgroup::create_in(&dir, "probe").map_err(|e| {
        format!(
            "--cgroup-parent {parent}: cannot make a step cgroup in {}: {}",
            dir.display(),
            with_causes(&e)
        )
    })?;
    probe.finish();
    Ok(dir)
}

/// `<mount>/P`, made (with its parents) when missing, as runc makes a
/// container's parents.
fn make_parent(parent: &CgroupParent, mount: &Path) -> Result<PathBuf, ExecError> {
    let dir = parent.under(mount);
    std::fs::create_dir_all(&dir).map_err(|source| ExecError::Io {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// Can this process make a filtered cgroup: makes one, attaches the
/// program and removes it again.
fn probe() -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("rootless: a device filter needs CAP_BPF in the initial user namespace".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("no cgroup2 filesystem is mounted")?;
    let parent = mount.join(PARENT_DIR);
    match std::fs::create_dir(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", parent.display())),
    }
    let probe = StepCgroup::create_in(&parent, "probe").map_err(|e| with_causes(&e))?;
    probe.finish();
    Ok(parent)
}

/// An error and its causes on one line (the probe's reason is shown as
/// words, not rendered as a chain by the CLI).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The mount point of the first cgroup2 filesystem in `mountinfo`
/// (proc(5): the fifth field is the mount point, the filesystem type
/// follows the ` - ` separator).
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u8::from_str_radix(d, 8).ok());
        if b[i] == b'\\'
            && let Some(v) = octal
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's PID namespace, as a step cgroup's name carries it
/// (`ns` and the inode of `/proc/self/ns/pid`): a pid names the owner only
/// in the namespace it was read in, and strata processes in other PID
/// namespaces (containers sharing this cgroupfs) make cgroups here too.
fn pid_namespace() -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata("/proc/self/ns/pid") {
        Ok(m) => format!("ns{}", m.ino()),
        Err(_) => "ns0".into(),
    }
}

/// Removes the cgroups under `parent` whose owner (the pid their name
/// starts with, in this PID namespace) is gone, ending what is left in
/// them first. Another namespace's are left to strata processes there.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let ours = pid_namespace();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut fields = name.split('-');
        let (Some(owner), Some(ns)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Ok(owner) = owner.parse::<i32>() else {
            continue;
        };
        if ns != ours || owner <= 0 || process_exists(owner) {
            continue;
        }
        let stale = StepCgroup {
            path: e.path(),
            procs: None,
            done: false,
        };
        stale.finish();
    }
}

/// Whether a process (not merely a thread: `kill(tid, 0)` succeeds for
/// any thread of any process) with this pid runs.
fn process_exists(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(status) => status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .is_some_and(|tgid| tgid.trim() == pid.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // No /proc to read: ask the kernel, which counts threads too.
        Err(_) => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) => true,
            Err(e) => e != nix::errno::Errno::ESRCH,
        },
    }
}

/// A step's cgroup: killed and removed when dropped (or by
/// [`StepCgroup::finish`]).
#[derive(Debug)]
pub(crate) struct StepCgroup {
    path: PathBuf,
    /// `cgroup.procs`, open for the step's first process to write itself in.
    procs: Option<OwnedFd>,
    done: bool,
}

impl StepCgroup {
    /// The cgroup for the step whose state directory is `state`, named
    /// after it (`step-XXXXXX`, unique in the scratch directory), under
    /// `under` (`--cgroup-parent`) or strata's own directory; `None` where
    /// steps get no cgroup (see [`support`]), an error if `under` was asked.
    pub(crate) fn for_step(
        state: &Path,
        under: Option<&CgroupParent>,
    ) -> Result<Option<StepCgroup>, ExecError> {
        let name = state
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "step".into());
        match (support(), under) {
            (Support::Filter { parent }, None) => Self::create_in(parent, &name).map(Some),
            (Support::Filter { parent }, Some(p)) => {
                Self::create_in(&make_parent(p, cgroup2_root(parent))?, &name).map(Some)
            }
            (Support::Unavailable(why), Some(p)) => Err(ExecError::Setup(p.unavailable(why))),
            (Support::Unavailable(_), None) => Ok(None),
        }
    }

    fn create_in(parent: &Path, step: &str) -> Result<StepCgroup, ExecError> {
        let path = parent.join(format!("{}-{}-{step}", std::process::id(), pid_namespace()));
        std::fs::create_dir(&path).map_err(|source| ExecError::Io {
            path: path.clone(),
            source,
        })?;
        // From here on, dropping removes the directory again.
        let mut cg = StepCgroup {
            path,
            procs: None,
            done: false,
        };
        let procs_path = cg.path.join("cgroup.procs");
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs_path)
            .map_err(|source| ExecError::Io {
                path: procs_path,
                source,
            })?;
        // At 10 or above, like the chroot step's error pipe: the descriptors
        // a helper is handed are placed on 3 and 4 before the process joins
        // (see `launch::prepare`), which must not land on this one.
        let procs = nix::fcntl::fcntl(&procs, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
            .map(|fd| {
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor we own.
                unsafe { OwnedFd::from_raw_fd(fd) }
            })
            .map_err(|e| ExecError::Io {
                path: cg.path.join("cgroup.procs"),
                source: e.into(),
            })?;
        cg.procs = Some(procs);
        attach_device_filter(&cg.path)?;
        Ok(cg)
    }

    #[cfg(test)]
    fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the process `cmd` starts join this cgroup between fork and
    /// exec, so that it and everything it starts run filtered.
    pub(crate) fn join_on_exec(&self, cmd: &mut Command) {
        let Some(fd) = self.procs.as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        // SAFETY: the closure runs between fork and exec and only calls
        // write(2) on a descriptor this struct keeps open until after the
        // spawn; it allocates nothing and takes no locks.
        unsafe {
            cmd.pre_exec(move || {
                // "0" moves the writing process (cgroup-v2.rst, cgroup.procs).
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }

    /// SIGKILLs every process in the cgroup (the step, what it left
    /// running, its helper).
    pub(crate) fn kill_all(&self) {
        if std::fs::write(self.path.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        // Before Linux 5.14: by pid, until nothing is left (a process may
        // fork while it is being listed).
        for _ in 0..100 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether a process is still in the cgroup (`cgroup.events`).
    fn populated(&self) -> bool {
        match std::fs::read_to_string(self.path.join("cgroup.events")) {
            Ok(events) => events.lines().any(|l| l == "populated 1"),
            Err(_) => !self.pids().is_empty(),
        }
    }

    /// Ends every process still in the cgroup, waits until they are gone
    /// and removes it. A cgroup that cannot be removed (a process stuck in
    /// the kernel) is left to the next strata's sweep rather than failing a
    /// step that has finished.
    pub(crate) fn finish(mut self) {
        self.finish_in_place();
    }

    fn finish_in_place(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.procs = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !self.populated() {
                match std::fs::remove_dir(&self.path) {
                    // EBUSY: the last process is still on its way out.
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                    // Removed, already gone, or not ours to remove: waiting
                    // would not change it.
                    _ => return,
                }
            }
            if Instant::now() > deadline {
                return;
            }
            self.kill_all();
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for StepCgroup {
    fn drop(&mut self) {
        self.finish_in_place();
    }
}

/// `bpf(2)` commands and constants (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`, up to
/// `expected_attach_type`; the kernel reads the rest as zero.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for `BPF_PROG_ATTACH`, up to `attach_flags`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] bpf_attr prefix of
    // the size passed; the kernel reads (and for the log, writes through
    // pointers inside it that the caller keeps alive) no more than that.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the device filter for runc's rules; with the verifier's log in the
/// error when the kernel refuses it.
fn load_device_filter() -> Result<OwnedFd, String> {
    let insns: Vec<u8> = program(&DEFAULT_RULES)
        .into_iter()
        .flat_map(Insn::to_bytes)
        .collect();
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"strata_devices");
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: (insns.len() / 8) as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that we own.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(first) => {
            // Again with the verifier's log, to say why.
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            if let Ok(fd) = bpf(BPF_PROG_LOAD, &mut attr) {
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            Err(match last {
                Some(l) => format!("loading the device filter: {first} ({l})"),
                None => format!("loading the device filter: {first}"),
            })
        }
    }
}

/// Attaches a freshly loaded device filter to the cgroup at `dir`. The
/// attachment holds the program; it goes when the cgroup is removed.
fn attach_device_filter(dir: &Path) -> Result<(), ExecError> {
    let prog = load_device_filter().map_err(ExecError::Setup)?;
    let cgroup = std::fs::File::open(dir).map_err(|source| ExecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| {
        ExecError::Setup(format!(
            "attaching the device filter to {}: {source}",
            dir.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
