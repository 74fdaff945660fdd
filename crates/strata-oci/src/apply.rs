//! Applying an (uncompressed) layer tar onto a directory: the layer reader.
//!
//! Every entry is placed with its parent resolved by
//! [`crate::path::secure_join`], so a symlink in the tree (or one the same
//! tar created a moment earlier) can never redirect a write outside `dest`.
//! Names with `..` are refused; a leading `/` is dropped (as tar does).
//! Hard link targets must resolve inside `dest`. Whiteouts go to a
//! [`WhiteoutHandler`]: [`DeleteWhiteouts`] (the default) deletes, merging
//! layers into one plain rootfs; the executor supplies one that materialises
//! overlayfs whiteouts instead.
//!
//! Ownership is kept when running as root (lchown); modes, mtimes and xattrs
//! always (xattrs that cannot be set are recorded as warnings). Device nodes
//! are created only by root, otherwise skipped with a warning; fifos always.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::layer::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::path::{clean_entry_name, secure_join, secure_join_nofollow};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("reading the layer tar")]
    Tar(#[source] io::Error),
    #[error("layer entry {name:?} escapes the destination")]
    Escapes { name: String },
    #[error("layer entry {name:?} is a hard link to {target:?}, which is not in the destination")]
    BadHardlink { name: String, target: String },
    #[error("layer entry {name:?}: its device numbers are not numbers")]
    BadDevice { name: String },
    #[error("layer entry {name:?}: {op} {}", path.display())]
    Io {
        name: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {name:?}")]
    Path {
        name: String,
        #[source]
        source: crate::path::PathError,
    },
}

/// What applying a layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
    /// Things skipped or degraded (device nodes without privilege, xattrs the
    /// filesystem refused), one line each.
    pub warnings: Vec<String>,
}

/// What a whiteout means for the destination.
pub trait WhiteoutHandler {
    /// `target` (a host path inside dest, its parent already resolved) was
    /// deleted by this layer.
    fn whiteout(&mut self, target: &Path) -> io::Result<()>;
    /// Directory `dir` (host path) is opaque: content from lower layers is
    /// hidden. `written(p)` says whether host path `p` came from this layer.
    fn opaque(&mut self, dir: &Path, written: &dyn Fn(&Path) -> bool) -> io::Result<()>;
}

/// Merges layers into a plain directory: whiteouts delete.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeleteWhiteouts;

impl WhiteoutHandler for DeleteWhiteouts {
    fn whiteout(&mut self, target: &Path) -> io::Result<()> {
        remove_any(target)
    }

    fn opaque(&mut self, dir: &Path, written: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        clear_unwritten(dir, written)
    }
}

fn clear_unwritten(dir: &Path, written: &dyn Fn(&Path) -> bool) -> io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        let p = e.path();
        if !written(&p) {
            remove_any(&p)?;
        } else if e.file_type()?.is_dir() {
            clear_unwritten(&p, written)?;
        }
    }
    Ok(())
}

/// Removes a file, link or whole directory tree; absent is fine. Public for
/// [`WhiteoutHandler`]s, which replace what a whiteout names.
pub fn remove_any(p: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Applies the uncompressed layer tar `reader` onto `dest` (which must exist).
pub fn apply_layer(
    reader: impl Read,
    dest: &Path,
    handler: &mut dyn WhiteoutHandler,
) -> Result<ApplyStats, ApplyError> {
    let privileged = nix::unistd::geteuid().is_root();
    let mut stats = ApplyStats::default();
    let mut written: HashSet<PathBuf> = HashSet::new();
    // Directory mtimes are set last: creating children changes them.
    let mut dir_times: Vec<(PathBuf, i64)> = Vec::new();
    let mut ar = tar::Archive::new(reader);
    for entry in ar.entries().map_err(ApplyError::Tar)? {
        let mut entry = entry.map_err(ApplyError::Tar)?;
        let raw = entry.path().map_err(ApplyError::Tar)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let rel =
            clean_entry_name(&raw).ok_or_else(|| ApplyError::Escapes { name: name.clone() })?;
        let Some(base) = rel.file_name().map(OsStr::to_owned) else {
            // The root itself ("./" or "/"): nothing to create.
            continue;
        };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let perr = |source| ApplyError::Path {
            name: name.clone(),
            source,
        };
        let ioerr = |op, path: &Path| {
            let name = name.clone();
            let path = path.to_owned();
            move |source| ApplyError::Io {
                name,
                op,
                path,
                source,
            }
        };
        let parent = secure_join(dest, parent_rel).map_err(perr)?;
        if !parent.starts_with(dest) {
            return Err(ApplyError::Escapes { name });
        }
        stats.entries += 1;

        let base_str = base.to_string_lossy();
        if base_str == OPAQUE_WHITEOUT {
            stats.whiteouts += 1;
            let w = &written;
            handler
                .opaque(&parent, &|p: &Path| w.contains(p))
                .map_err(ioerr("clearing opaque directory", &parent))?;
            continue;
        }
        if let Some(hidden) = base_str.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(ApplyError::Escapes { name });
            }
            stats.whiteouts += 1;
            let target = parent.join(hidden);
            handler
                .whiteout(&target)
                .map_err(ioerr("applying whiteout", &target))?;
            continue;
        }

        std::fs::create_dir_all(&parent).map_err(ioerr("creating parent directory", &parent))?;
        let target = parent.join(&base);
        let kind = entry.header().entry_type();
        let existing = std::fs::symlink_metadata(&target).ok();
        // Replace what is there unless both are directories (then merge).
        if let Some(m) = &existing
            && !(m.is_dir() && kind.is_dir())
        {
            remove_any(&target).map_err(ioerr("replacing", &target))?;
        }
        let mode = numeric_or_zero(
            entry.header().mode().map(u64::from),
            &entry.header().as_old().mode,
        )? as u32
            & 0o7777;
        let mut set_mode = true;
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    std::fs::create_dir(&target).map_err(ioerr("creating directory", &target))?;
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(ioerr("creating file", &target))?;
                // Zeros become holes: a sparse file stays sparse in the snapshot.
                let n = crate::sparse::copy_sparse(&mut entry, &mut f)
                    .map_err(ioerr("writing file", &target))?;
                stats.bytes += n;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(ApplyError::Tar)?
                    .unwrap_or_default()
                    .into_owned();
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(ioerr("creating symlink", &target))?;
                set_mode = false;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(ApplyError::Tar)?
                    .unwrap_or_default()
                    .into_owned();
                let bad = || ApplyError::BadHardlink {
                    name: name.clone(),
                    target: link.to_string_lossy().into_owned(),
                };
                let link_rel = clean_entry_name(&link).ok_or_else(bad)?;
                let src = secure_join_nofollow(dest, &link_rel).map_err(perr)?;
                if !src.starts_with(dest) || src == dest {
                    return Err(bad());
                }
                std::fs::hard_link(&src, &target).map_err(ioerr("creating hard link", &target))?;
                // Docker's untar (and containerd's) then gives the shared
                // inode the link header's owner, mode, xattrs and mtime,
                // unless it is a symlink's.
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                    written.insert(target);
                    continue;
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                use nix::sys::stat::{Mode, SFlag, makedev, mknod};
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if sflag != SFlag::S_IFIFO && !privileged {
                    stats
                        .warnings
                        .push(format!("{name}: device node skipped (needs root)"));
                    continue;
                }
                let (major, minor) = device_numbers(entry.header())
                    .ok_or_else(|| ApplyError::BadDevice { name: name.clone() })?;
                let made = mknod(
                    &target,
                    sflag,
                    Mode::from_bits_truncate(mode),
                    makedev(major.into(), minor.into()),
                );
                match made {
                    // Root in a user namespace lacks CAP_MKNOD for devices.
                    Err(nix::errno::Errno::EPERM) if sflag != SFlag::S_IFIFO => {
                        stats
                            .warnings
                            .push(format!("{name}: device node skipped (not permitted here)"));
                        continue;
                    }
                    other => other
                        .map_err(|e| io::Error::from_raw_os_error(e as i32))
                        .map_err(ioerr("creating device node", &target))?,
                }
            }
            other => {
                stats
                    .warnings
                    .push(format!("{name}: entry type {other:?} skipped"));
                continue;
            }
        }
        let h = entry.header();
        if privileged {
            let uid = u32::try_from(numeric_or_zero(h.uid(), &h.as_old().uid)?).unwrap_or(u32::MAX);
            let gid = u32::try_from(numeric_or_zero(h.gid(), &h.as_old().gid)?).unwrap_or(u32::MAX);
            std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                .map_err(ioerr("changing owner of", &target))?;
        }
        if set_mode {
            // After chown, which clears set-id bits.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(ioerr("setting mode of", &target))?;
        }
        if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Tar)? {
            for ext in exts {
                let ext = ext.map_err(ApplyError::Tar)?;
                let Ok(key) = ext.key() else { continue };
                let Some(attr) = key.strip_prefix("SCHILY.xattr.") else {
                    continue;
                };
                if !crate::layer::xattr_kept(attr) {
                    continue;
                }
                if let Err(e) = xattr::set(&target, attr, ext.value_bytes()) {
                    stats
                        .warnings
                        .push(format!("{name}: xattr {attr} not set: {e}"));
                }
            }
        }
        let mtime = i64::try_from(entry.header().mtime().map_err(ApplyError::Tar)?).unwrap_or(0);
        if kind.is_dir() {
            dir_times.push((target.clone(), mtime));
        } else {
            set_mtime(&target, mtime).map_err(ioerr("setting mtime of", &target))?;
        }
        written.insert(target);
    }
    for (p, t) in dir_times.iter().rev() {
        set_mtime(p, *t).map_err(|source| ApplyError::Io {
            name: p.to_string_lossy().into_owned(),
            op: "setting mtime of",
            path: p.clone(),
            source,
        })?;
    }
    Ok(stats)
}

fn set_mtime(p: &Path, secs: i64) -> io::Result<()> {
    use nix::sys::stat::{UtimensatFlags, utimensat};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// A numeric header field, where an empty one (all NULs or spaces) reads as
/// 0, as Go's archive/tar (and so BuildKit and docker) reads it; anything
/// else unparseable is an error.
fn numeric_or_zero(parsed: std::io::Result<u64>, raw: &[u8]) -> Result<u64, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(ApplyError::Tar(e)),
    }
}
/// A device entry's major and minor numbers, read as Go's archive/tar does:
/// GNU tar leaves the fields of a FIFO all NUL, which is 0, not an error
/// (the tar crate refuses it); octal digits, or base-256 when the high bit
/// is set. `None` when a field holds anything else.
fn device_numbers(h: &tar::Header) -> Option<(u32, u32)> {
    let raw = h.as_bytes();
    Some((
        numeric_field(&raw[329..337])?,
        numeric_field(&raw[337..345])?,
    ))
}

fn numeric_field(f: &[u8]) -> Option<u32> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        // Base-256: the rest of the field, big-endian.
        return f[1..]
            .iter()
            .try_fold(u64::from(f[0] & 0x7f), |n, &b| {
                n.checked_mul(256).map(|n| n + u64::from(b))
            })
            .and_then(|n| u32::try_from(n).ok());
    }
    let digits = std::str::from_utf8(f)
        .ok()?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u32::from_str_radix(digits, 8).ok()
}
