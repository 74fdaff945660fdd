//! An image's layers as overlay lower directories.

use std::path::PathBuf;

use strata_store::{KeyKind, LayerRecord, Lease, Store};

use crate::Result;

/// Unpacks `layers` into the store's snapshots (each layer once, ever, and
/// once across processes: under the layer's key lock, re-checked under it)
/// and returns them as overlay lowerdirs, top-most first. The layers are
/// added to `lease` first, so GC keeps them while they are unpacked and
/// mounted. Shared by builds and `strata run`.
pub fn lowers(store: &Store, lease: &Lease, layers: &[LayerRecord]) -> Result<Vec<PathBuf>> {
    lowers_counted(store, lease, layers).map(|(l, _)| l)
}

/// [`lowers`], also saying how many layers had to be unpacked now (the
/// others had snapshots already), for progress and for tests that count.
pub fn lowers_counted(
    store: &Store,
    lease: &Lease,
    layers: &[LayerRecord],
) -> Result<(Vec<PathBuf>, usize)> {
    if !layers
        .iter()
        .all(|l| lease.holds(&l.blob) && lease.holds(&l.diff_id))
    {
        let lock = store.lock()?;
        lease.hold_layers(store, &lock, layers)?;
    }
    for dir in store.tree_parents() {
        strata_exec::snapshot::spread_subdirectories(&dir);
    }
    let mut lowers = Vec::new();
    let mut unpacked = 0;
    for l in layers {
        let dir = store.snapshot_dir(&l.diff_id);
        if !store.snapshot_ready(&l.diff_id)? {
            let _making = store.key_lock(KeyKind::Snapshot, &l.diff_id)?;
            // Another process (or thread) may have made it while we waited.
            if !store.snapshot_ready(&l.diff_id)? {
                if dir.exists() {
                    // Left by an unpack that died: never marked ready.
                    strata_exec::snapshot::remove_tree(&dir)?;
                }
                let reader = store.open_layer_tar(l)?;
                // The diffID is checked while unpacking: a blob that does not
                // match its record never becomes a snapshot.
                if let Err(e) = strata_exec::snapshot::unpack_layer_verified(
                    reader,
                    &dir,
                    strata_exec::Mode::current(),
                    Some(&l.diff_id),
                ) {
                    // A half-made snapshot is never used (it is not marked
                    // ready), but on a full disk its space is what the user
                    // needs back now, not at the next unpack of this layer.
                    let _ = strata_exec::snapshot::remove_tree(&dir);
                    return Err(e.into());
                }
                store.snapshot_done(&store.lock()?, &l.diff_id)?;
                unpacked += 1;
            }
        }
        lowers.push(dir);
    }
    lowers.reverse();
    Ok((lowers, unpacked))
}
