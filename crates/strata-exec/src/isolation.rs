//! How a RUN step is kept apart from the machine it runs on, and which of
//! those ways works here.
//!
//! - `namespaces`: mount, PID, UTS, IPC (and for `--network=none`, network)
//!   namespaces over an overlayfs snapshot; rootless through a user
//!   namespace. Needs `unshare(2)` and `mount(2)`, which Docker's default
//!   seccomp profile refuses a container without `CAP_SYS_ADMIN`.
//! - `chroot`: the lowers copied into a scratch root, the step `chroot(2)`ed
//!   into it (see [`crate::chroot`]). Needs only what Docker grants a root
//!   container by default (`CAP_SYS_CHROOT`, `CAP_CHOWN`, `CAP_MKNOD`,
//!   `CAP_SETUID`/`CAP_SETGID`): no unshare, no mount. The step shares the
//!   container's PID, network and UTS namespaces and gets no live `/proc`.
//! - `none` (Kaniko's model: steps run in the container's own root) is
//!   refused: it would overwrite the container strata itself runs in.
//!
//! [`choose`] probes in a forked child, so a refused syscall costs nothing
//! but that child.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// `--isolation`: what the caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The strongest mode that works here ([`choose`] says which and why).
    #[default]
    Auto,
    Namespaces,
    Chroot,
    /// Refused by [`choose`] (see the module docs).
    None,
}

impl FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Isolation::Auto),
            "namespaces" => Ok(Isolation::Namespaces),
            "chroot" => Ok(Isolation::Chroot),
            "none" => Ok(Isolation::None),
            other => Err(format!(
                "--isolation {other}: expected auto, namespaces, chroot or none"
            )),
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
            Isolation::Namespaces => "namespaces",
            Isolation::Chroot => "chroot",
            Isolation::None => "none",
        })
    }
}

/// The mode [`choose`] settled on, and why, in words for the progress output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// [`Isolation::Namespaces`] or [`Isolation::Chroot`].
    pub isolation: Isolation,
    /// Why this mode, then how devices are kept from steps (a cgroup with
    /// a device filter, or the fallback: [`crate::cgroup::Support`]).
    pub reason: String,
}

/// Why `--isolation none` is refused, for the error message.
pub const NONE_REFUSED: &str = "--isolation none (running steps in this container's own root \
     filesystem, as Kaniko did) is not supported: a step would overwrite the container strata \
     runs in, and its changes could not be told from strata's own files. Use --isolation chroot, \
     which needs only Docker's default capabilities as root";

/// Resolves `requested` to a mode that works here. An explicit
/// `namespaces` or `chroot` is checked too, so that it fails now, naming
/// what is missing, rather than at the first RUN.
pub fn choose(requested: Isolation) -> Result<Choice, String> {
    match requested {
        Isolation::None => Err(NONE_REFUSED.to_string()),
        Isolation::Namespaces => probe_namespaces()
            .map(|()| Choice {
                isolation: Isolation::Namespaces,
                reason: "requested".into(),
            })
            .map_err(|why| format!("--isolation namespaces does not work here: {why}")),
        Isolation::Chroot => probe_chroot()
            .map(|()| Choice {
                isolation: Isolation::Chroot,
                reason: "requested".into(),
            })
            .map_err(|why| format!("--isolation chroot does not work here: {why}")),
        Isolation::Auto => match probe_namespaces() {
            Ok(()) => Ok(Choice {
                isolation: Isolation::Namespaces,
                reason: format!(
                    "namespaces work here; {}",
                    crate::cgroup::support().describe()
                ),
            }),
            Err(ns) => match probe_chroot() {
                Ok(()) => Ok(Choice {
                    isolation: Isolation::Chroot,
                    reason: format!(
                        "namespaces do not work here ({ns}); chroot does: steps share this \
                         container's processes and network and get no live /proc; {}",
                        crate::cgroup::support().describe()
                    ),
                }),
                Err(ch) => Err(format!(
                    "no isolation for RUN steps works here: namespaces: {ns}; chroot: {ch}"
                )),
            },
        },
    }
}

/// What `Auto` resolves to in this process, probed once.
pub(crate) fn auto() -> Result<Isolation, String> {
    static AUTO: OnceLock<Result<Isolation, String>> = OnceLock::new();
    AUTO.get_or_init(|| choose(Isolation::Auto).map(|c| c.isolation))
        .clone()
}

/// Whether this process may create the namespaces a step needs: as root, a
/// mount (plus PID, UTS, IPC) namespace and a private mount; otherwise a
/// user namespace.
fn probe_namespaces() -> Result<(), String> {
    let root = nix::unistd::geteuid().is_root();
    let outcome = in_child(|| {
        if root {
            let flags =
                libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID;
            // SAFETY: unshare takes integer flags and only affects this
            // forked child.
            if unsafe { libc::unshare(flags) } != 0 {
                return Err(Failed::Unshare);
            }
            // SAFETY: all pointers are null or point to static NUL-terminated
            // strings; the mount namespace is this child's own.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            if r != 0 {
                return Err(Failed::Mount);
            }
        } else {
            // SAFETY: as above.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
                return Err(Failed::Unshare);
            }
        }
        Ok(())
    })?;
    outcome.map_err(|(what, errno)| match what {
        Failed::Unshare if root => format!(
            "unshare(mount, PID namespaces): {errno} (a container needs CAP_SYS_ADMIN and a \
             seccomp profile that allows unshare)"
        ),
        Failed::Unshare => format!(
            "unshare(user namespace): {errno} (user namespaces are disabled or blocked by a \
             seccomp profile)"
        ),
        _ => format!("mount: {errno} (needs CAP_SYS_ADMIN)"),
    })
}

/// Whether this process may `chroot(2)`: root with `CAP_SYS_CHROOT`.
fn probe_chroot() -> Result<(), String> {
    let uid = nix::unistd::geteuid();
    if !uid.is_root() {
        return Err(format!(
            "strata runs as uid {uid}, and chroot needs root with CAP_SYS_CHROOT (run the \
             container as root, without --user)"
        ));
    }
    let outcome = in_child(|| {
        // SAFETY: a static NUL-terminated path; only this child's root moves.
        if unsafe { libc::chroot(c"/".as_ptr()) } != 0 {
            return Err(Failed::Chroot);
        }
        Ok(())
    })?;
    outcome.map_err(|(_, errno)| format!("chroot: {errno} (needs CAP_SYS_CHROOT)"))
}

/// What a probe child found refused.
#[derive(Debug, Clone, Copy)]
enum Failed {
    Unshare,
    Mount,
    Chroot,
}

impl Failed {
    const ALL: [Failed; 3] = [Failed::Unshare, Failed::Mount, Failed::Chroot];
}

/// Runs `probe` in a forked child, which sends back over a pipe whether it
/// worked or which call failed with which errno (5 bytes: the call, or 0xff
/// for success, then the errno).
fn in_child(
    probe: impl Fn() -> Result<(), Failed>,
) -> Result<Result<(), (Failed, nix::errno::Errno)>, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("probing isolation: pipe: {e}"))?;
    // SAFETY: strata may have other threads, so the child only makes raw
    // syscalls (unshare, mount, chroot, write, _exit), which are
    // async-signal-safe; it allocates nothing and takes no locks.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("probing isolation: fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            drop(r);
            let code: [u8; 5] = match probe() {
                Ok(()) => [0xff, 0, 0, 0, 0],
                Err(what) => {
                    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                    let e = errno.to_le_bytes();
                    [what as u8, e[0], e[1], e[2], e[3]]
                }
            };
            // SAFETY: writes 5 bytes from a stack buffer to a pipe we own.
            unsafe { libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), code.as_ptr().cast(), 5) };
            // SAFETY: _exit skips the parent's atexit handlers, which must
            // not run in this forked copy.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut buf = [0u8; 5];
            let read = std::io::Read::read_exact(&mut std::fs::File::from(r), &mut buf);
            let _ = nix::sys::wait::waitpid(child, None);
            read.map_err(|e| format!("probing isolation: the probe child said nothing: {e}"))?;
            if buf[0] == 0xff {
                return Ok(Ok(()));
            }
            let what = Failed::ALL
                .get(usize::from(buf[0]))
                .copied()
                .unwrap_or(Failed::Unshare);
            let errno = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
            Ok(Err((what, nix::errno::Errno::from_raw(errno))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_mode() {
        for m in [
            Isolation::Auto,
            Isolation::Namespaces,
            Isolation::Chroot,
            Isolation::None,
        ] {
            assert_eq!(m.to_string().parse::<Isolation>(), Ok(m));
        }
        let e = "jail".parse::<Isolation>().expect_err("unknown mode");
        assert!(e.contains("auto, namespaces, chroot or none"), "{e}");
    }

    #[test]
    fn none_is_refused_with_the_alternative() {
        let e = choose(Isolation::None).expect_err("none is refused");
        assert!(e.contains("--isolation chroot"), "{e}");
    }

    /// As root on a machine where namespaces work (the test machines), auto
    /// picks them; chroot works too.
    #[test]
    fn auto_prefers_namespaces_where_they_work() {
        if !nix::unistd::geteuid().is_root() || probe_namespaces().is_err() {
            return;
        }
        let c = choose(Isolation::Auto).expect("auto");
        assert_eq!(c.isolation, Isolation::Namespaces);
        assert_eq!(
            choose(Isolation::Chroot).expect("chroot").isolation,
            Isolation::Chroot
        );
    }
}
