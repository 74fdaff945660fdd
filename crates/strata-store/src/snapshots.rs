//! Unpacked layers (`snapshots/<diffID>`): where they live and whether an
//! unpack finished.

use std::path::PathBuf;

use strata_oci::Digest;

use crate::db::*;
use crate::*;

impl Store {
    /// Directory where the unpacked tree of a layer lives.
    pub fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// Records that the snapshot of `diff_id` is complete (after unpacking it
    /// into [`Store::snapshot_dir`]).
    pub fn snapshot_done(&self, _lock: &WriteLock, diff_id: &Digest) -> Result<()> {
        self.write(|txn| {
            txn.open_table(SNAPSHOTS)?
                .insert(diff_id.to_string().as_str(), "complete")?;
            Ok(())
        })
    }

    pub fn snapshot_ready(&self, diff_id: &Digest) -> Result<bool> {
        self.read(|txn| {
            Ok(txn
                .open_table(SNAPSHOTS)?
                .get(diff_id.to_string().as_str())?
                .is_some())
        })
    }
}
