//! Flattening lowerdirs into one plain directory, the way overlayfs would
//! present them: for the copying fallback (where overlayfs cannot be mounted:
//! the scratch directory is itself on overlayfs, or on a filesystem overlay
//! rejects), for images deeper than overlayfs stacks, and for copying an
//! image entry's metadata onto a mount stub. Not strata-build's COPY.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use strata_oci::apply::remove_any;

use crate::overlay::{is_opaque, is_overlay_xattr, is_whiteout};

/// Applies one unpacked lower (with overlay whiteouts) on top of `root`.
/// `root` is only ever written through real directories this function made
/// or checked, so no symlink in the image is followed.
pub(crate) fn apply_lower(lower: &Path, root: &Path) -> io::Result<()> {
    let mut links = HashMap::new();
    apply_dir(lower, root, &mut Some(&mut links))
}

/// [`apply_lower`] with every file a copy of its own, also where the lower
/// has hard links: a step writing one name must not change another, as on
/// overlayfs, whose copy-up breaks hard links (without `index=on`). Files
/// with several links after the step were then linked by the step, which is
/// what the differ's rule for them assumes.
pub(crate) fn apply_lower_unlinked(lower: &Path, root: &Path) -> io::Result<()> {
    apply_dir(lower, root, &mut None)
}

fn apply_dir(
    src: &Path,
    dst: &Path,
    links: &mut Option<&mut HashMap<(u64, u64), std::path::PathBuf>>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        if is_whiteout(&from, &meta) {
            remove_any(&to)?;
            continue;
        }
        if meta.is_dir() {
            let existing = std::fs::symlink_metadata(&to).ok();
            let opaque = is_opaque(&from);
            if opaque || existing.as_ref().is_some_and(|m| !m.is_dir()) {
                remove_any(&to)?;
            }
            if std::fs::symlink_metadata(&to).is_err() {
                std::fs::create_dir(&to)?;
            }
            apply_dir(&from, &to, links)?;
            copy_metadata(&from, &to, &meta)?;
            continue;
        }
        remove_any(&to)?;
        let ft = meta.file_type();
        if let Some(links) = links.as_deref_mut()
            && ft.is_file()
            && meta.nlink() > 1
        {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                std::fs::hard_link(first, &to)?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        copy_entry(&from, &to, &meta)?;
    }
    Ok(())
}

/// Copies one non-directory entry with its metadata.
pub(crate) fn copy_entry(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    let ft = meta.file_type();
    if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if ft.is_file() {
        std::fs::copy(from, to)?;
    } else {
        let kind = if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else if ft.is_block_device() {
            nix::sys::stat::SFlag::S_IFBLK
        } else if ft.is_fifo() {
            nix::sys::stat::SFlag::S_IFIFO
        } else {
            nix::sys::stat::SFlag::S_IFSOCK
        };
        nix::sys::stat::mknod(
            to,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            meta.rdev(),
        )
        .map_err(io::Error::from)?;
    }
    copy_metadata(from, to, meta)
}

pub(crate) fn copy_metadata(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    if let Ok(names) = xattr::list(from) {
        for name in names.filter(|n| !is_overlay_xattr(n)) {
            if let Ok(Some(v)) = xattr::get(from, &name) {
                xattr::set(to, &name, &v)?;
            }
        }
    }
    if !meta.file_type().is_symlink() {
        // After chown, which clears setuid/setgid bits.
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    }
    let times = [
        nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec()),
        nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
    ];
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &times[0],
        &times[1],
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}
