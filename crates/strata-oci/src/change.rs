//! What a build step changed, as the layer writer consumes it. The executor's
//! differ, COPY/ADD and `commit` all produce a list of [`Change`]s relative to a
//! root directory; the layer writer reads the file data from that root.

use std::path::PathBuf;

/// One change, by path relative to the image root (no leading `/`, no `..`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChangeKind {
    /// The path exists in the root and is new or modified: written as a tar
    /// entry from the file on disk (metadata included).
    Upsert,
    /// The path was deleted: written as a `.wh.<name>` whiteout.
    Delete,
    /// The directory exists in the root and replaces the lower one wholesale:
    /// written as the directory entry plus `.wh..wh..opq` inside it.
    OpaqueDir,
}

impl Change {
    pub fn upsert(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kind: ChangeKind::Upsert,
        }
    }

    pub fn delete(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kind: ChangeKind::Delete,
        }
    }

    pub fn opaque_dir(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            kind: ChangeKind::OpaqueDir,
        }
    }
}
