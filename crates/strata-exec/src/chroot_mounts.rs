//! `--isolation chroot`: `RUN --mount=type=cache|secret|ssh` without
//! `mount(2)` (the SSH forwarder serves the namespaces executor too, so
//! that its socket can have the mount's owner and mode). What a bind mount would share is copied in before the step
//! and, for a cache, copied back after it; an SSH agent is reached through
//! a socket strata listens on inside the step's root and forwards to the
//! agent. [`crate::chroot`] places these where the step's mounts go and
//! takes them back out before the step's changes are diffed, so none of
//! them reaches a layer.
//!
//! What differs from the namespaces executor's mounts:
//! - a cache is a copy: concurrent steps sharing one (`sharing=shared`) do
//!   not see each other's writes while they run, the last to finish leaves
//!   its contents (copied back under an exclusive lock, so never a mix),
//!   and each step copies the whole cache twice;
//! - a secret is a file in the step's root, which is on the store's disk
//!   (`$STRATA_ROOT/tmp`), not on a tmpfs, for the duration of the step; a
//!   step that renames or hard-links it (which a bind mount would refuse)
//!   fails, since the file would otherwise stay in the layer.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use strata_oci::apply::remove_any;

use crate::error::ExecError;
use crate::spec::{CacheSharing, Mount};

fn setup(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ExecError {
    move |e| ExecError::Setup(format!("--isolation chroot: {what}: {e}"))
}

/// Gives `path` its owner and mode, as the namespaces executor gives the
/// file or directory it mounts.
fn own(path: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
}

/// For a `sharing=shared` cache, a lock held while it is copied in
/// (shared) or back (exclusive), so that no step copies a half-written
/// cache. Locked and private caches are held exclusively for the whole step
/// already ([`crate::step_parent::lock_cache_mounts`]): taking another lock here
/// would wait on our own.
fn brief_lock(
    dir: &Path,
    sharing: CacheSharing,
    arg: FlockArg,
) -> Result<Option<Flock<std::fs::File>>, ExecError> {
    if sharing != CacheSharing::Shared {
        return Ok(None);
    }
    let f = std::fs::File::open(dir).map_err(|source| ExecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Flock::lock(f, arg)
        .map(Some)
        .map_err(|(_, e)| ExecError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })
}

/// Copies the cache `dir` to `to` (which must not exist), first giving a
/// new (empty) cache its requested owner and mode, as the namespaces
/// executor does before mounting it.
pub(crate) fn copy_cache_in(
    dir: &Path,
    to: &Path,
    sharing: CacheSharing,
    (uid, gid, mode): (u32, u32, u32),
) -> Result<(), ExecError> {
    let _lock = brief_lock(dir, sharing, FlockArg::LockShared)?;
    let what = || format!("copying the cache {} in", dir.display());
    let empty = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .map_err(setup(what()))?;
    if empty {
        own(dir, uid, gid, mode).map_err(setup(format!(
            "giving the new cache {} its owner and mode",
            dir.display()
        )))?;
    }
    let meta = std::fs::symlink_metadata(dir).map_err(setup(what()))?;
    std::fs::create_dir(to)
        .and_then(|()| crate::flatten::apply_lower_unlinked(dir, to))
        .and_then(|()| crate::flatten::copy_metadata(dir, to, &meta))
        .map_err(setup(what()))
}

/// Replaces the cache `dir`'s contents with what the step left at `from`
/// (`None`: the step replaced the directory with something else, which a
/// mount would not have allowed; the cache is left as it was).
pub(crate) fn copy_cache_back(
    from: Option<&Path>,
    dir: &Path,
    sharing: CacheSharing,
) -> Result<(), ExecError> {
    let Some(from) = from else {
        return Ok(());
    };
    let Ok(meta) = std::fs::symlink_metadata(from) else {
        return Ok(());
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let _lock = brief_lock(dir, sharing, FlockArg::LockExclusive)?;
    let what = || format!("copying the cache back to {}", dir.display());
    (|| {
        for entry in std::fs::read_dir(dir)? {
            remove_any(&entry?.path())?;
        }
        crate::flatten::apply_lower_unlinked(from, dir)?;
        crate::flatten::copy_metadata(from, dir, &meta)
    })()
    .map_err(setup(what()))
}

/// A secret placed as a file for one step; which file it was, so that
/// [`PlacedSecret::check_in_place`] can tell whether the step moved it.
pub(crate) struct PlacedSecret {
    target: String,
    dev: u64,
    ino: u64,
}

impl PlacedSecret {
    /// Writes `data` to `to` (which must not exist) with the secret's owner
    /// and mode.
    pub(crate) fn place(
        target: &str,
        to: &Path,
        data: &[u8],
        (uid, gid, mode): (u32, u32, u32),
    ) -> Result<Self, ExecError> {
        let what = || format!("placing the secret at {target}");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(setup(what()))?;
        io::Write::write_all(&mut f, data).map_err(setup(what()))?;
        drop(f);
        own(to, uid, gid, mode).map_err(setup(what()))?;
        let meta = std::fs::symlink_metadata(to).map_err(setup(what()))?;
        Ok(PlacedSecret {
            target: target.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// After the step: the secret must still be the one file at its place
    /// (`at`: `None` when the step replaced a parent directory). A bind
    /// mount cannot be renamed or hard-linked elsewhere; a plain file can,
    /// and would then stay in the layer.
    pub(crate) fn check_in_place(&self, at: Option<&Path>) -> Result<(), ExecError> {
        let meta = at.and_then(|p| std::fs::symlink_metadata(p).ok());
        match meta {
            Some(m) if m.dev() == self.dev && m.ino() == self.ino && m.nlink() == 1 => Ok(()),
            _ => Err(ExecError::Invalid(format!(
                "RUN --mount=type=secret at {}: the step moved, removed or hard-linked the \
                 secret's file; with --isolation chroot the secret is a plain file, which \
                 would then stay in the layer (read it, copy what you need elsewhere)",
                self.target
            ))),
        }
    }
}

/// An SSH agent reachable at a path in the step's root: strata listens on
/// a socket there and forwards each connection to the agent's socket, as
/// a bind mount of the agent's socket would let it through. Stops
/// listening when dropped; connections still open end with the step's
/// processes.
pub(crate) struct SshForward {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SshForward {
    /// Listens at `at` (which must not exist), giving the socket the
    /// mount's owner and mode, and forwards to `agent`.
    pub(crate) fn start(
        target: &str,
        at: &Path,
        agent: &Path,
        (uid, gid, mode): (u32, u32, u32),
    ) -> Result<Self, ExecError> {
        let forward = Self::listen(target, at, agent)?;
        own(at, uid, gid, mode)
            .map_err(setup(format!("listening for the SSH agent at {target}")))?;
        Ok(forward)
    }

    /// Listens at `at` (which must not exist), owned by this process with
    /// mode 0600, and forwards to `agent`.
    fn listen(target: &str, at: &Path, agent: &Path) -> Result<Self, ExecError> {
        let what = || format!("listening for the SSH agent at {target}");
        let listener = bind_unix(at).map_err(setup(what()))?;
        listener.set_nonblocking(true).map_err(setup(what()))?;
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o600))
            .map_err(setup(what()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ssh-forward".into())
            .spawn(move || accept_loop(&listener, &agent, &stopped))
            .map_err(setup(what()))?;
        Ok(SshForward {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// For the namespaces executor: each SSH mount's agent socket replaced by
/// a forwarder's socket in the step's state directory, which the helper
/// gives the mount's `uid=`/`gid=`/`mode=` inside the user namespace (where
/// those IDs are the step's) before binding it. Binding the agent's own
/// socket would show the step the agent's owner and mode, and changing
/// them would change the user's agent. Stopped when dropped, after the step.
pub(crate) fn forward_ssh_mounts(
    mounts: &mut [Mount],
    state: &Path,
) -> Result<Vec<SshForward>, ExecError> {
    let mut forwards = Vec::new();
    for (i, m) in mounts.iter_mut().enumerate() {
        if let Mount::Ssh { target, socket, .. } = m {
            let at = state.join(format!("ssh-agent-{i}.sock"));
            forwards.push(SshForward::listen(target, &at, socket)?);
            *socket = at;
        }
    }
    Ok(forwards)
}

/// Binds a listening socket at `at`, whose path may be longer than a
/// socket address holds (108 bytes; a step's root is deep in the store):
/// the directory is reached through `/proc/self/fd`.
fn bind_unix(at: &Path) -> io::Result<UnixListener> {
    let (Some(parent), Some(name)) = (at.parent(), at.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no socket", at.display()),
        ));
    };
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(parent)?;
    let short: PathBuf = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixListener::bind(short)
}

fn accept_loop(listener: &UnixListener, agent: &Path, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                // An agent that is gone shows the step a closed connection,
                // as a dangling bind mount would refuse it.
                if let Ok(up) = UnixStream::connect(agent) {
                    forward(conn, up);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Copies both ways between the step's connection and the agent, each
/// direction on a thread of its own, until either side closes.
fn forward(conn: UnixStream, up: UnixStream) {
    let pipe = |mut from: UnixStream, mut to: UnixStream| {
        move || {
            let _ = from.set_nonblocking(false);
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        }
    };
    let (Ok(conn2), Ok(up2)) = (conn.try_clone(), up.try_clone()) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("ssh-forward-in".into())
        .spawn(pipe(conn, up));
    let _ = std::thread::Builder::new()
        .name("ssh-forward-out".into())
        .spawn(pipe(up2, conn2));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// The forwarder's socket, at a path longer than a socket address
    /// holds, carries bytes both ways to the agent and back.
    #[test]
    fn forwards_a_connection_to_the_agent_from_a_long_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let agent_path = tmp.path().join("agent.sock");
        let agent = UnixListener::bind(&agent_path).expect("bind agent");
        let answering = std::thread::spawn(move || {
            let (mut c, _) = agent.accept().expect("accept");
            let mut asked = [0u8; 4];
            c.read_exact(&mut asked).expect("read");
            c.write_all(&[asked, *b"-ok\n"].concat()).expect("write");
        });
        let deep = tmp.path().join("d".repeat(100)).join("run/buildkit");
        std::fs::create_dir_all(&deep).expect("mkdir");
        let at = deep.join("ssh_agent.0");
        assert!(at.as_os_str().len() > 108);
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let fwd = SshForward::start(
            "/run/buildkit/ssh_agent.0",
            &at,
            &agent_path,
            (uid, gid, 0o600),
        )
        .expect("start");
        let meta = std::fs::symlink_metadata(&at).expect("socket made");
        assert_eq!(meta.mode() & 0o7777, 0o600);
        // Connected through /proc/self/fd too: the client has the same
        // address-length limit.
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&deep)
            .expect("open dir");
        let mut c = UnixStream::connect(format!("/proc/self/fd/{}/ssh_agent.0", dir.as_raw_fd()))
            .expect("connect");
        c.write_all(b"ping").expect("write");
        let mut answer = String::new();
        c.read_to_string(&mut answer).expect("read");
        assert_eq!(answer, "ping-ok\n");
        answering.join().expect("agent thread");
        drop(fwd);
    }

    #[test]
    fn a_moved_secret_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let at = tmp.path().join("tok");
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let s =
            PlacedSecret::place("/run/secrets/tok", &at, b"v", (uid, gid, 0o400)).expect("place");
        assert_eq!(std::fs::read(&at).expect("read"), b"v");
        s.check_in_place(Some(&at)).expect("in place");
        std::fs::hard_link(&at, tmp.path().join("copy")).expect("link");
        let e = s.check_in_place(Some(&at)).expect_err("linked");
        assert!(
            e.to_string().contains("moved, removed or hard-linked"),
            "{e}"
        );
        std::fs::rename(tmp.path().join("copy"), tmp.path().join("other")).expect("rename");
        std::fs::remove_file(&at).expect("rm");
        assert!(s.check_in_place(Some(&at)).is_err());
    }
}
