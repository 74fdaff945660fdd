//! An image's layers as overlay lower directories.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use strata_store::{LayerRecord, Store, WriteLock};

use crate::Result;

/// Snapshots are made (unpacked, adopted, removed when incomplete) under
/// this lock. Across processes the store's write lock keeps builds apart,
/// but builds in one process (`strata bake`) share that lock, and without
/// this one two of them unpack the same base layer into the same directory
/// at once, each removing what the other wrote.
static MAKING: Mutex<()> = Mutex::new(());

/// The process-wide lock for making snapshots (see [`lowers`]); a caller
/// that makes one itself (a step's layer adopted as its snapshot) holds it
/// and checks again, under it, that the snapshot is still missing.
pub fn snapshot_guard() -> MutexGuard<'static, ()> {
    // A panic while holding it leaves at worst an incomplete snapshot,
    // which is never marked ready and is removed before the next attempt.
    MAKING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Unpacks `layers` into the store's snapshots (each layer once, ever) and
/// returns them as overlay lowerdirs, top-most first. Shared by builds and
/// `strata run`.
pub fn lowers(store: &Store, lock: &WriteLock, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
    lowers_counted(store, lock, layers).map(|(l, _)| l)
}

/// [`lowers`], also saying how many layers had to be unpacked now (the
/// others had snapshots already), for progress and for tests that count.
pub fn lowers_counted(
    store: &Store,
    lock: &WriteLock,
    layers: &[LayerRecord],
) -> Result<(Vec<PathBuf>, usize)> {
    let _making = snapshot_guard();
    let mut lowers = Vec::new();
    let mut unpacked = 0;
    for l in layers {
        let dir = store.snapshot_dir(&l.diff_id);
        if !store.snapshot_ready(&l.diff_id)? {
            if dir.exists() {
                strata_exec::snapshot::remove_tree(&dir)?;
            }
            let reader = store.open_layer_tar(l)?;
            // The diffID is checked while unpacking: a blob that does not
            // match its record never becomes a snapshot.
            strata_exec::snapshot::unpack_layer_verified(
                reader,
                &dir,
                strata_exec::Mode::current(),
                Some(&l.diff_id),
            )?;
            store.snapshot_done(lock, &l.diff_id)?;
            unpacked += 1;
        }
        lowers.push(dir);
    }
    lowers.reverse();
    Ok((lowers, unpacked))
}
