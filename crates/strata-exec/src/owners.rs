//! Giving files in a tree the owners the image should see. As root that is
//! `lchown` here; rootless, an unprivileged process cannot give files to its
//! subordinate IDs, so the changes go to a helper inside the user namespace
//! (where container uid 1000 is the host's subordinate uid for it), like
//! rootless unpacking. COPY and ADD write their trees as the user and then
//! set owners through this.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::launch::run_task_rootless;
use crate::protocol::TASK_OWNERS;

/// One path's owner (container IDs) and, for what is not a symlink, its
/// mode again: a chown may clear setuid/setgid bits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerChange {
    /// Relative to the tree's root.
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: Option<u32>,
}

/// Whether owners must go through [`set_owners`] (rootless) rather than be
/// set directly.
pub fn deferred() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// Sets `changes` under `root`: directly as root, else in the rootless
/// helper. Paths never leave `root`: their parents are resolved inside it.
pub fn set_owners(root: &Path, changes: &[OwnerChange]) -> Result<(), ExecError> {
    if changes.is_empty() {
        return Ok(());
    }
    if !deferred() {
        return apply(root, changes).map_err(|source| ExecError::Io {
            path: root.to_path_buf(),
            source,
        });
    }
    let input = serde_json::to_vec(changes).map_err(|e| ExecError::Helper(e.to_string()))?;
    run_task_rootless(TASK_OWNERS, root, Some(&mut input.as_slice()))
}

/// In this process (root, or the helper inside the user namespace).
pub(crate) fn apply(root: &Path, changes: &[OwnerChange]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for c in changes {
        let name = c.path.file_name().ok_or_else(|| {
            std::io::Error::other(format!("{}: not a file name", c.path.display()))
        })?;
        let parent = c.path.parent().unwrap_or(Path::new(""));
        let dir = strata_oci::path::secure_join(root, parent).map_err(std::io::Error::other)?;
        let p = dir.join(name);
        std::os::unix::fs::lchown(&p, Some(c.uid), Some(c.gid))
            .map_err(|e| std::io::Error::new(e.kind(), format!("chown {}: {e}", p.display())))?;
        if let Some(mode) = c.mode {
            let is_link = std::fs::symlink_metadata(&p)?.file_type().is_symlink();
            if !is_link {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
            }
        }
    }
    Ok(())
}

/// The helper's side: the changes as JSON on stdin.
pub(crate) fn apply_stdin(root: &Path) -> std::io::Result<()> {
    use std::io::Read;
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input)?;
    let changes: Vec<OwnerChange> =
        serde_json::from_slice(&input).map_err(std::io::Error::other)?;
    apply(root, &changes)
}
