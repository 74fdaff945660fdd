//! The owners COPY and ADD give what they write. As root, `lchown` at once.
//! Rootless, an unprivileged process cannot give a file to root or to its
//! subordinate IDs, so each owner (in the image's IDs) is noted while the
//! tree is written and the executor sets them all inside the user namespace
//! once the step's tree is complete ([`apply_pending`]).
//!
//! The notes are per thread: a step's copy runs on one thread from
//! [`begin`] to [`apply_pending`], and the recursive tree copy does not
//! have to carry a collector through every call.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use strata_exec::owners::OwnerChange;

use crate::error::{Result, io};

/// A path and the owner (and mode) it is to get.
type Noted = (PathBuf, u32, u32, Option<u32>);

thread_local! {
    static PENDING: RefCell<Vec<Noted>> = const { RefCell::new(Vec::new()) };
}

/// Starts a step: forgets what a failed earlier step on this thread noted.
pub(super) fn begin() {
    PENDING.with(|p| p.borrow_mut().clear());
}

/// Gives `path` the image owner `uid:gid`; `mode` is set again after a
/// deferred chown, which may clear setuid/setgid bits.
pub(super) fn set_owner(path: &Path, uid: u32, gid: u32, mode: Option<u32>) -> Result<()> {
    if strata_exec::owners::deferred() {
        PENDING.with(|p| p.borrow_mut().push((path.to_owned(), uid, gid, mode)));
        return Ok(());
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(io(format!("chown {}", path.display())))
}

/// The image's uid/gid of a file on disk (rootless, snapshots hold host
/// IDs: the user's own for root, subordinate IDs for the rest).
pub(super) fn image_ids(uid: u32, gid: u32) -> (u32, u32) {
    let m = strata_exec::idmap::IdMapping::current();
    (m.container_uid(uid), m.container_gid(gid))
}

/// Sets the owners noted under `root` (rootless; nothing is noted as root).
pub(super) fn apply_pending(root: &Path) -> Result<()> {
    let noted = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let changes: Vec<OwnerChange> = noted
        .into_iter()
        .filter_map(|(p, uid, gid, mode)| {
            let rel = p.strip_prefix(root).ok()?;
            (!rel.as_os_str().is_empty()).then(|| OwnerChange {
                path: rel.to_owned(),
                uid,
                gid,
                mode,
            })
        })
        .collect();
    Ok(strata_exec::owners::set_owners(root, &changes)?)
}
