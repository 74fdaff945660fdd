//! The step's network namespace: for `--network=none` a fresh one with
//! loopback; for the default, a fresh one connected through `pasta`.

use std::ffi::CString;
use std::io::{IoSlice, IoSliceMut, Write};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use super::context::err;

/// Brings the loopback interface up in a fresh network namespace.
pub(super) fn loopback_up() -> Result<(), String> {
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
    // The request's type is libc's `Ioctl`: c_ulong with glibc, c_int with
    // musl (the static dist binary).
    // SAFETY: SIOCGIFFLAGS reads the named interface's flags into `req`, a
    // valid ifreq that outlives the call; the fd is a live socket.
    if unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFFLAGS as libc::Ioctl,
            &mut req,
        )
    } < 0
    {
        return Err(format!("get lo flags: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifr_ifru is a union; SIOCGIFFLAGS just filled its flags member.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &req) } < 0 {
        return Err(format!("bring lo up: {}", std::io::Error::last_os_error()));
    }
    allow_unprivileged_ping();
    Ok(())
}

/// Where pasta's own messages go (read back when it fails to start).
const PASTA_LOG: &str = "pasta.log";
/// The descriptor pasta finds the step's network namespace on.
const PASTA_NETNS_FD: i32 = 3;

/// The default network: a fresh network namespace for this process (the
/// step's pid 1), connected outwards by `pasta`, as rootless Podman does.
/// pasta is forked before the namespace exists, so it stays in strata's
/// network namespace, and it joins the new one through a descriptor sent
/// over a socket pair (opening `/proc/<pid>/ns/net` itself would need
/// ptrace rights over this process, which pasta gives up before it opens
/// it). It lives in the step's PID namespace, so it dies with the step on
/// every path. No port is forwarded either way, and the gateway address is
/// not mapped to the host's loopback: the step reaches the outside world,
/// not services bound to the host's 127.0.0.1.
pub(super) fn private_network(
    pasta: &Path,
    state: &Path,
    dns_forward: Option<IpAddr>,
) -> Result<(), String> {
    let mut args: Vec<String> = [
        "pasta",
        "--foreground",
        "--quiet",
        // Errors to the log file too, not only to syslog.
        "--stderr",
        // pasta started as root switches to nobody unless told otherwise,
        // and nobody cannot enter the namespace (nor exist, rootless).
        "--runas",
        "0",
        "--config-net",
        "--no-map-gw",
        "-t",
        "none",
        "-u",
        "none",
        "-T",
        "none",
        "-U",
        "none",
        "--netns",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(format!("/proc/self/fd/{PASTA_NETNS_FD}"));
    if let Some(addr) = dns_forward {
        args.push("--dns-forward".into());
        args.push(addr.to_string());
    }
    let argv: Vec<CString> = args
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("{a:?} contains a NUL byte")))
        .collect::<Result<_, _>>()?;
    let program = CString::new(pasta.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains a NUL byte", pasta.display()))?;
    let log_path = state.join(PASTA_LOG);
    let log = std::fs::File::create(&log_path).map_err(err(log_path.display()))?;
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(err("socketpair for pasta"))?;
    // SAFETY: this process (the step's pid 1, forked from the single-threaded
    // helper) is single-threaded, so the child may run any code.
    match unsafe { nix::unistd::fork() }.map_err(err("fork pasta"))? {
        ForkResult::Child => {
            drop(ours);
            let e = exec_pasta(&theirs, &log, &program, &argv);
            let _ = writeln!(&log, "strata: starting {}: {e}", pasta.display());
            // SAFETY: _exit skips atexit handlers, which must not run in a
            // forked copy.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .map_err(err("unshare the network namespace"))?;
            let netns =
                std::fs::File::open("/proc/self/ns/net").map_err(err("open /proc/self/ns/net"))?;
            let fds = [netns.as_raw_fd()];
            sendmsg::<()>(
                ours.as_raw_fd(),
                &[IoSlice::new(b"n")],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::empty(),
                None,
            )
            .map_err(err("hand the network namespace to pasta"))?;
            wait_for_route(child, &log_path)?;
            loopback_up()
        }
    }
}

/// In the forked child: takes the namespace descriptor from the socket,
/// places it on [`PASTA_NETNS_FD`], sends output to the log and execs pasta.
/// Returns only on failure.
fn exec_pasta(
    sock: &std::os::fd::OwnedFd,
    log: &std::fs::File,
    program: &CString,
    argv: &[CString],
) -> String {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = match recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    ) {
        Ok(m) => m,
        Err(e) => return format!("receive the network namespace: {e}"),
    };
    let mut received = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                received = fds.first().copied();
            }
        }
    }
    let Some(fd) = received else {
        return "no network namespace arrived".into();
    };
    // Output first: the log may sit on PASTA_NETNS_FD itself.
    for target in [1, 2] {
        // SAFETY: dup2 of an open file onto stdout/stderr of this process.
        if unsafe { libc::dup2(log.as_raw_fd(), target) } < 0 {
            return format!("redirect output: {}", std::io::Error::last_os_error());
        }
    }
    // SAFETY: dup2/fcntl on descriptors this process owns; the result must
    // survive exec, which dup2's copy does (a copy onto itself would keep
    // close-on-exec, hence fcntl then).
    let placed = unsafe {
        if fd == PASTA_NETNS_FD {
            libc::fcntl(fd, libc::F_SETFD, 0) >= 0
        } else {
            libc::dup2(fd, PASTA_NETNS_FD) >= 0
        }
    };
    if !placed {
        return format!(
            "place the namespace fd: {}",
            std::io::Error::last_os_error()
        );
    }
    // Rust ignores SIGPIPE, and an ignored signal stays ignored across exec;
    // pasta treats an already ignored SIGPIPE as a failure to install its
    // handlers ("Couldn't install signal handlers").
    // SAFETY: restoring a default disposition installs no handler code.
    if let Err(e) = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    } {
        return format!("reset SIGPIPE: {e}");
    }
    let env: [CString; 0] = [];
    match nix::unistd::execve(program, argv, &env) {
        Ok(never) => match never {},
        Err(e) => e.to_string(),
    }
}

/// Waits until pasta has configured the namespace (a default route exists),
/// or reports why it did not.
fn wait_for_route(pasta: Pid, log: &Path) -> Result<(), String> {
    let failed = |why: String| {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        let said: Vec<&str> = said
            .lines()
            .filter(|l| !l.contains("syslog") && !l.trim().is_empty())
            .collect();
        format!("default network: pasta {why}: {}", said.join("; "))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // This process's own namespace: /proc/self/net follows the caller.
        let routes = std::fs::read_to_string("/proc/self/net/route").unwrap_or_default();
        if routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000"))
        {
            return Ok(());
        }
        match waitpid(pasta, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            Ok(status) => return Err(failed(format!("exited ({status:?})"))),
            Err(e) => return Err(failed(format!("cannot be waited for ({e})"))),
        }
        if Instant::now() > deadline {
            return Err(failed("configured no route within 10 s".into()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// ICMP echo sockets for every group, so ping works without CAP_NET_RAW
/// (Docker 20.10 sets the same sysctl). Both ends of the range must be
/// mapped in this user namespace, so rootless it is the mapped groups. Per
/// network namespace; a kernel that refuses it leaves ping needing the
/// capability the step does not have, which is not worth failing the step
/// for.
fn allow_unprivileged_ping() {
    let highest = std::fs::read_to_string("/proc/self/gid_map")
        .ok()
        .and_then(|map| {
            map.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace().map(|n| n.parse::<u64>().ok());
                    let (inside, _, count) = (f.next()??, f.next()??, f.next()??);
                    (inside + count).checked_sub(1)
                })
                .max()
        })
        .unwrap_or(0)
        .min(2147483647);
    let _ = std::fs::write(
        "/proc/sys/net/ipv4/ping_group_range",
        format!("0 {highest}"),
    );
}
