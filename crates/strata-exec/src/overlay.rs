//! The overlayfs rules, as pure predicates over what is on disk: which xattr
//! namespace a mode uses, what a whiteout and an opaque directory look like,
//! and how a path is looked up through a stack of lowerdirs. A leaf module:
//! it spawns nothing and writes nothing.
//!
//! A snapshot directory holds one layer's tar unpacked with overlay-style
//! whiteouts: a deleted path is a `0:0` character device, a directory that
//! replaces the lower one carries the opaque xattr (`trusted.overlay.opaque`
//! rootful, `user.overlay.opaque` rootless, for the `userxattr` mount option).

use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Which xattr namespace overlayfs metadata lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// `trusted.overlay.*`: needs real root.
    Rootful,
    /// `user.overlay.*`: usable by an unprivileged user namespace with the
    /// `userxattr` mount option.
    Rootless,
}

impl Mode {
    /// The mode matching this process's privileges.
    pub fn current() -> Self {
        if nix::unistd::geteuid().is_root() {
            Mode::Rootful
        } else {
            Mode::Rootless
        }
    }

    /// The xattr that marks a directory opaque in this mode.
    pub(crate) fn opaque_xattr(self) -> &'static str {
        match self {
            Mode::Rootful => "trusted.overlay.opaque",
            Mode::Rootless => "user.overlay.opaque",
        }
    }
}

/// Marks each directory of a chroot step's copied root that was there before
/// the step ran, so that the differ can tell a directory the step removed
/// and made again (an opaque directory, as overlayfs records it) from one it
/// only emptied. In the overlay namespace, so it is never compared nor
/// written to a layer.
pub(crate) const COPIED_DIR_XATTR: &str = "user.overlay.strata-copied";

/// Every xattr name overlayfs uses to mark an opaque directory.
const OPAQUE_XATTRS: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];
/// Xattr-based whiteouts (kernel 6.7+ "xwhiteouts").
const WHITEOUT_XATTRS: [&str; 2] = ["trusted.overlay.whiteout", "user.overlay.whiteout"];

/// Whether `meta` (from `lstat` of `path`) is an overlay whiteout.
pub fn is_whiteout(path: &Path, meta: &Metadata) -> bool {
    let ft = meta.file_type();
    if ft.is_char_device() && meta.rdev() == 0 {
        return true;
    }
    ft.is_file()
        && meta.len() == 0
        && WHITEOUT_XATTRS
            .iter()
            .any(|x| matches!(xattr::get(path, x), Ok(Some(_))))
}

/// Whether the directory at `path` is marked opaque.
pub fn is_opaque(path: &Path) -> bool {
    OPAQUE_XATTRS
        .iter()
        .any(|x| matches!(xattr::get(path, x), Ok(Some(v)) if v == b"y"))
}

/// Whether an xattr name belongs to overlayfs itself (never image content).
pub(crate) fn is_overlay_xattr(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    n.starts_with(b"trusted.overlay.") || n.starts_with(b"user.overlay.")
}

/// Splits a relative path into normal components, refusing `..` and roots:
/// paths handed around here are always relative to an image root.
pub(crate) fn normal_components(rel: &Path) -> Option<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// The outcome of looking a path up through the lowers.
#[derive(Debug)]
pub struct Found {
    /// The path on disk inside the lower that provides it.
    pub path: PathBuf,
    pub meta: Metadata,
}

/// Looks `rel` up through `lowers` (top-most first) as overlayfs presents
/// it, without following symlinks anywhere: a path whose parent is a
/// non-directory in some layer does not exist as such (it is reached through
/// the symlink, which is the symlink's business), whiteouts delete, and an
/// opaque directory hides everything below it in lower layers.
pub fn lookup(lowers: &[PathBuf], rel: &Path) -> Option<Found> {
    let comps = normal_components(rel)?;
    for lower in lowers {
        let mut cur = lower.clone();
        let mut stop_after = false;
        let mut hidden = false;
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let meta = match std::fs::symlink_metadata(&cur) {
                Ok(m) => m,
                // Not in this layer: look further down (unless an opaque
                // ancestor here already hides the lower layers).
                Err(_) => {
                    hidden = false;
                    break;
                }
            };
            if is_whiteout(&cur, &meta) {
                return None;
            }
            let last = i + 1 == comps.len();
            if last {
                return Some(Found { path: cur, meta });
            }
            if !meta.is_dir() {
                // A file/symlink over a directory path hides the path below.
                hidden = true;
                break;
            }
            if is_opaque(&cur) {
                stop_after = true;
            }
        }
        if hidden || stop_after {
            return None;
        }
    }
    None
}
