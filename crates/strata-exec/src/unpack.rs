//! Unpacking a layer tar into a snapshot directory with overlay whiteouts.
//!
//! Written directly over the `tar` crate because the layer applier in
//! strata-oci did not exist yet when this was written; it keeps the same
//! rules: no entry escapes the destination (`..` and absolute paths are
//! refused, and a parent that is not a real directory this layer made is an
//! error, so an archive symlink is never followed), and hard links must point
//! at a file already unpacked inside the destination.

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::snapshot::Mode;

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Normal components of an archive path; `..` or a root is hostile.
fn clean(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "archive path {} leaves the destination",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Makes the parent directories of `rel` inside `dest`, refusing to pass
/// through anything that is not a real directory.
fn ensure_parents(dest: &Path, rel: &Path) -> io::Result<()> {
    let mut cur = dest.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(bad(format!(
                    "{} is not a directory in the layer",
                    cur.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o755).create(&cur)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn remove_existing(path: &Path, keep_dir: bool) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if keep_dir {
                Ok(())
            } else {
                std::fs::remove_dir_all(path)
            }
        }
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn whiteout(path: &Path) -> io::Result<()> {
    remove_existing(path, false)?;
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("whiteout {}: {e}", path.display()),
        )
    })
}

/// Unpacks an uncompressed layer tar into the empty directory `dest`.
pub(crate) fn unpack_into(reader: impl Read, dest: &Path, mode: Mode) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let rel = clean(&entry.path()?)?;
        let Some(name) = rel.file_name().map(|n| n.to_os_string()) else {
            continue;
        };
        let name_bytes = name.as_encoded_bytes();
        if name_bytes == b".wh..wh..opq" {
            ensure_parents(dest, &rel)?;
            let dir = dest.join(rel.parent().unwrap_or(Path::new("")));
            if dir != dest {
                xattr::set(&dir, mode.opaque_xattr(), b"y")?;
            }
            continue;
        }
        if let Some(target) = name_bytes.strip_prefix(b".wh.") {
            ensure_parents(dest, &rel)?;
            let target = std::ffi::OsStr::from_bytes(target);
            whiteout(&dest.join(rel.with_file_name(target)))?;
            continue;
        }
        ensure_parents(dest, &rel)?;
        let path = dest.join(&rel);
        let header = entry.header().clone();
        let kind = header.entry_type();
        match kind {
            EntryType::Directory => {
                remove_existing(&path, true)?;
                if std::fs::symlink_metadata(&path).is_err() {
                    std::fs::create_dir(&path)?;
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&path, false)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .mode(0o600)
                    .open(&path)?;
                io::copy(&mut entry, &mut f)?;
            }
            EntryType::Symlink => {
                remove_existing(&path, false)?;
                let target = entry
                    .link_name()?
                    .ok_or_else(|| bad(format!("symlink {} has no target", rel.display())))?;
                std::os::unix::fs::symlink(target, &path)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| bad(format!("hard link {} has no target", rel.display())))?;
                let target_rel = clean(&target)?;
                ensure_parents(dest, &target_rel)?;
                let src = dest.join(&target_rel);
                let m = std::fs::symlink_metadata(&src).map_err(|e| {
                    bad(format!(
                        "hard link {} to missing {}: {e}",
                        rel.display(),
                        target_rel.display()
                    ))
                })?;
                if m.is_dir() {
                    return Err(bad(format!("hard link {} to a directory", rel.display())));
                }
                remove_existing(&path, false)?;
                std::fs::hard_link(&src, &path)?;
                // A link shares its target's metadata; nothing more to set.
                continue;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_existing(&path, false)?;
                let sflag = match kind {
                    EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let major = header.device_major()?.unwrap_or(0);
                let minor = header.device_minor()?.unwrap_or(0);
                nix::sys::stat::mknod(
                    &path,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("mknod {}: {e}", path.display()),
                    )
                })?;
            }
            // PAX/GNU metadata entries are consumed by the tar crate; anything
            // else has no filesystem meaning.
            _ => continue,
        }
        // Hard links (handled above) carry no metadata of their own.
        let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
        let perm = header.mode()? & 0o7777;
        let mtime = header.mtime()? as i64;
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions()? {
            for ext in exts {
                let ext = ext?;
                if let Ok(key) = ext.key()
                    && let Some(name) = key.strip_prefix("SCHILY.xattr.")
                {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                }
            }
        }
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?;
        for (name, value) in xattrs {
            if crate::snapshot::is_overlay_xattr(std::ffi::OsStr::new(&name)) {
                continue;
            }
            xattr::set(&path, &name, &value)?;
        }
        if kind != EntryType::Symlink {
            // After chown, which clears setuid/setgid.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(perm))?;
        }
        if kind == EntryType::Directory {
            dirs.push((path, mtime));
        } else {
            set_mtime(&path, mtime)?;
        }
    }
    // Directory times last: creating their children touched them.
    for (dir, mtime) in dirs.iter().rev() {
        set_mtime(dir, *mtime)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, secs: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(data.len() as u64);
        // Write the raw name so hostile paths reach the unpacker unfiltered.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn mode() -> Mode {
        Mode::current()
    }

    #[test]
    fn dotdot_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "../escape", EntryType::Regular, None, b"x");
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("d");
        std::fs::create_dir(&dest).expect("mkdir");
        assert!(unpack_into(&tar[..], &dest, mode()).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn symlink_parent_is_never_followed() {
        let outside = tempfile::tempdir().expect("tmp");
        let mut b = tar::Builder::new(Vec::new());
        let target = outside.path().to_string_lossy().into_owned();
        entry(&mut b, "link", EntryType::Symlink, Some(&target), b"");
        entry(&mut b, "link/owned", EntryType::Regular, None, b"x");
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        assert!(unpack_into(&tar[..], dir.path(), mode()).is_err());
        assert!(!outside.path().join("owned").exists());
    }

    #[test]
    fn whiteouts_links_and_modes() {
        if !nix::unistd::geteuid().is_root() {
            // mknod of whiteouts and trusted xattrs need root outside a userns.
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "d/", EntryType::Directory, None, b"");
        entry(&mut b, "d/.wh..wh..opq", EntryType::Regular, None, b"");
        entry(&mut b, "d/.wh.gone", EntryType::Regular, None, b"");
        entry(&mut b, "d/f", EntryType::Regular, None, b"data");
        entry(&mut b, "d/hard", EntryType::Link, Some("d/f"), b"");
        entry(
            &mut b,
            "d/outside",
            EntryType::Link,
            Some("../../etc/passwd"),
            b"",
        );
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        // The last link points outside: refused after the rest was written.
        assert!(unpack_into(&tar[..], dir.path(), Mode::Rootful).is_err());
        let d = dir.path().join("d");
        assert!(crate::snapshot::is_opaque(&d));
        let gone = d.join("gone");
        let m = std::fs::symlink_metadata(&gone).expect("whiteout");
        assert!(crate::snapshot::is_whiteout(&gone, &m));
        use std::os::unix::fs::MetadataExt;
        let (f, h) = (
            std::fs::metadata(d.join("f")).expect("f"),
            std::fs::metadata(d.join("hard")).expect("hard"),
        );
        assert_eq!(f.ino(), h.ino());
        assert_eq!(f.mode() & 0o7777, 0o755);
    }
}
