//! What both parent sides of a step share, the namespaces executor's
//! ([`crate::run`]) and the chroot one's ([`crate::chroot`]): reading the
//! step's output as it comes, and holding its cache mounts' locks.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use nix::fcntl::{Flock, FlockArg};

use crate::error::ExecError;
use crate::spec::{CacheSharing, Mount, OutputStream};

/// Takes the locks of the step's `sharing=locked` and `sharing=private`
/// cache mounts, held until the returned locks drop (the end of the step).
/// A private cache in use elsewhere is replaced by a fresh empty directory
/// in the step's `state`, discarded with it.
pub(crate) fn lock_cache_mounts(
    mounts: &mut [Mount],
    state: &Path,
) -> Result<Vec<Flock<std::fs::File>>, ExecError> {
    let mut locks = Vec::new();
    for (i, m) in mounts.iter_mut().enumerate() {
        if let Mount::Cache { dir, sharing, .. } = m {
            if *sharing == CacheSharing::Shared {
                continue;
            }
            let f = std::fs::File::open(&*dir).map_err(|source| ExecError::Io {
                path: dir.clone(),
                source,
            })?;
            let arg = if *sharing == CacheSharing::Locked {
                FlockArg::LockExclusive
            } else {
                FlockArg::LockExclusiveNonblock
            };
            match Flock::lock(f, arg) {
                Ok(l) => locks.push(l),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if *sharing == CacheSharing::Private => {
                    let fresh = state.join(format!("cache{i}"));
                    std::fs::create_dir(&fresh).map_err(|source| ExecError::Io {
                        path: fresh.clone(),
                        source,
                    })?;
                    *dir = fresh;
                }
                Err((_, e)) => {
                    return Err(ExecError::Io {
                        path: dir.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }
    Ok(locks)
}

/// What a step wrote, a chunk at a time, from either stream.
pub(crate) type OutputChunks = mpsc::Receiver<(OutputStream, Vec<u8>)>;

/// A thread per output pipe of a step, sending what it reads as it comes
/// (32 KiB at most at a time) until the pipe closes; the receiver ends
/// once both have.
pub(crate) fn read_outputs(
    stdout: Option<Box<dyn Read + Send>>,
    stderr: Option<Box<dyn Read + Send>>,
) -> (OutputChunks, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel::<(OutputStream, Vec<u8>)>();
    let mut readers = Vec::new();
    for (stream, pipe) in [
        (OutputStream::Stdout, stdout),
        (OutputStream::Stderr, stderr),
    ] {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send((stream, buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    (rx, readers)
}
