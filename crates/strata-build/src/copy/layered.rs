//! A stage's tree read straight from its snapshots (a leaf: `tree`
//! copies from it, `stage_tree` makes it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_store::MergedTree;

use crate::error::{Result, other};

/// A stage's (or image's) tree as a COPY reads it: the merged index says
/// what a directory holds, and each path is read from the top-most snapshot
/// that provides it, as overlayfs would show it. Nothing is unpacked or
/// copied to scratch; the snapshots are immutable, so their files may be
/// hard-linked into the new layer (`FileCopies::try_link_snapshot`).
pub(super) struct LayeredSource {
    pub(super) tree: Arc<MergedTree>,
    /// The source's snapshots, top-most first (overlayfs' lowerdir order).
    pub(super) lowers: Vec<PathBuf>,
}

impl LayeredSource {
    /// The snapshot file that provides `rel` (relative to the tree's root)
    /// and its metadata.
    pub(super) fn find(&self, rel: &Path) -> Result<strata_exec::snapshot::Found> {
        if rel.as_os_str().is_empty() {
            // The root: the top-most snapshot's, as overlayfs shows it.
            let Some(top) = self.lowers.first() else {
                return Err(other("/: not found in the source (it has no layers)"));
            };
            let meta = std::fs::symlink_metadata(top)
                .map_err(crate::error::io(format!("reading {}", top.display())))?;
            return Ok(strata_exec::snapshot::Found {
                path: top.clone(),
                meta,
            });
        }
        strata_exec::snapshot::lookup(&self.lowers, rel).ok_or_else(|| {
            other(format!(
                "/{}: not found in the source's snapshots",
                rel.display()
            ))
        })
    }

    /// Names directly inside the directory `rel`, sorted.
    pub(super) fn children(&self, rel: &Path) -> Vec<String> {
        self.tree.children(&rel.to_string_lossy())
    }
}
