//! Turning what a step changed into [`Change`]s.
//!
//! Overlay: the upperdir is walked; whiteouts become deletions, opaque
//! directories become [`ChangeKind::OpaqueDir`], and entries whose content and
//! metadata equal what the lowers provide are dropped (overlayfs copies a
//! file up when it is merely rewritten, and directories when anything below
//! them changes). Modification times alone do not make a change, so a step
//! that rewrites a file with the same bytes adds nothing; the exception is
//! a directory a mount's stub touched, kept with its new mtime as BuildKit
//! keeps it ([`Stub::touched_parent`]). Regular files with several links
//! are always kept so hard links survive in the layer.
//!
//! Copy fallback: the scratch root is walked and compared against the lowers
//! in the same way, and paths the lowers have but the root lacks become
//! deletions.

use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_oci::Change;

use crate::error::ExecError;
use crate::overlay::{self, is_opaque, is_overlay_xattr, is_whiteout};
use crate::protocol::{Stub, StubKind};
use crate::snapshot::remove_tree;
use crate::spec::SnapshotMethod;

/// A finished step's filesystem changes, on disk. Removed on drop.
#[derive(Debug)]
pub struct Upper {
    pub(crate) state: PathBuf,
    pub(crate) upper: PathBuf,
    pub(crate) lowers: Vec<PathBuf>,
    pub(crate) method: SnapshotMethod,
    pub(crate) stubs: Vec<Stub>,
    /// The copied root's directories carry [`overlay::COPIED_DIR_XATTR`]
    /// (chroot steps): one without it where the lowers have an entry was
    /// made by the step in place of that entry.
    pub(crate) marked_dirs: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Upper {
    /// The directory the layer writer reads file data from (the upperdir, or
    /// the whole scratch root with the copying fallback).
    pub fn root(&self) -> &Path {
        &self.upper
    }

    /// How the step's root was provided.
    pub fn method(&self) -> SnapshotMethod {
        self.method
    }

    /// Turns the upperdir into the unpacked snapshot of the layer written from
    /// it (moving it to `dest`, on the same filesystem), so that the layer is
    /// neither re-extracted for the next step nor deleted file by file now.
    /// Only with overlayfs (a copied root is not one layer); returns whether
    /// it was done. Stub entries placed for mounts are removed first. The
    /// snapshot keeps the step's own mtimes where the layer clamps them, as
    /// BuildKit's snapshot of a step does.
    pub fn into_snapshot(self, dest: &Path) -> Result<bool, ExecError> {
        if self.method != SnapshotMethod::Overlay {
            return Ok(false);
        }
        for stub in &self.stubs {
            let p = self.upper.join(&stub.path);
            if let Ok(meta) = std::fs::symlink_metadata(&p)
                && self.is_stub(&stub.path, &meta)
            {
                let _ = if meta.is_dir() {
                    std::fs::remove_dir(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
        std::fs::rename(&self.upper, dest).map_err(io_err(dest))?;
        Ok(true)
    }

    /// What the step changed, parents before children.
    pub fn changes(&self) -> Result<Vec<Change>, ExecError> {
        let mut out = Vec::new();
        let walk = Walk {
            touched: self
                .stubs
                .iter()
                .filter(|s| s.kind == StubKind::Mount)
                .filter_map(|s| s.touched_parent(&self.lowers))
                .collect(),
        };
        match self.method {
            SnapshotMethod::Overlay => self.walk_upper(&walk, Path::new(""), false, &mut out)?,
            SnapshotMethod::Copy => self.walk_copy(&walk, Path::new(""), &mut out)?,
        }
        Ok(out)
    }

    fn is_stub(&self, rel: &Path, meta: &Metadata) -> bool {
        self.stubs.iter().any(|s| s.path == rel)
            && overlay::lookup(&self.lowers, rel).is_none()
            && if meta.is_dir() {
                true
            } else {
                meta.is_file() && meta.len() == 0
            }
    }

    fn children(dir: &Path) -> Result<Vec<std::ffi::OsString>, ExecError> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        names.sort();
        Ok(names)
    }

    /// `all_new`: inside an opaque or new directory nothing is compared.
    fn walk_upper(
        &self,
        walk: &Walk,
        rel: &Path,
        all_new: bool,
        out: &mut Vec<Change>,
    ) -> Result<(), ExecError> {
        let dir = self.upper.join(rel);
        for name in Self::children(&dir)? {
            let rel = rel.join(&name);
            let path = self.upper.join(&rel);
            let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            if is_whiteout(&path, &meta) {
                if !all_new && overlay::lookup(&self.lowers, &rel).is_some() {
                    out.push(Change::delete(rel));
                }
                continue;
            }
            let lower = if all_new {
                None
            } else {
                overlay::lookup(&self.lowers, &rel)
            };
            if meta.is_dir() {
                let opaque = is_opaque(&path);
                if opaque && lower.is_some() {
                    out.push(Change::opaque_dir(rel.clone()));
                } else if walk.touched.contains(&rel)
                    || !lower
                        .as_ref()
                        .is_some_and(|l| same(&l.path, &l.meta, &path, &meta).unwrap_or(false))
                {
                    out.push(Change::upsert(rel.clone()));
                }
                let new = all_new || opaque || !lower.as_ref().is_some_and(|l| l.meta.is_dir());
                self.walk_upper(walk, &rel, new, out)?;
            } else if !keep_unless_same(lower.as_ref(), &path, &meta)? {
                continue;
            } else {
                out.push(Change::upsert(rel));
            }
        }
        Ok(())
    }

    fn walk_copy(&self, walk: &Walk, rel: &Path, out: &mut Vec<Change>) -> Result<(), ExecError> {
        let dir = self.upper.join(rel);
        let present = Self::children(&dir)?;
        // Deletions: names the lowers have here that the root lost.
        let mut lower_names: Vec<std::ffi::OsString> = Vec::new();
        for lower in &self.lowers {
            if let Ok(rd) = std::fs::read_dir(lower.join(rel)) {
                for e in rd.flatten() {
                    let n = e.file_name();
                    if !lower_names.contains(&n) {
                        lower_names.push(n);
                    }
                }
            }
        }
        lower_names.sort();
        for name in lower_names {
            let r = rel.join(&name);
            if !present.contains(&name) && overlay::lookup(&self.lowers, &r).is_some() {
                out.push(Change::delete(r));
            }
        }
        for name in present {
            let rel = rel.join(&name);
            let path = self.upper.join(&rel);
            let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            if self.is_stub(&rel, &meta) {
                continue;
            }
            let lower = overlay::lookup(&self.lowers, &rel);
            if meta.is_dir()
                && self.marked_dirs
                && lower.is_some()
                && !matches!(xattr::get(&path, overlay::COPIED_DIR_XATTR), Ok(Some(_)))
            {
                // Removed and made again: overlayfs would hold an opaque
                // directory with everything below it new.
                out.push(Change::opaque_dir(rel.clone()));
                self.walk_upper(walk, &rel, true, out)?;
            } else if meta.is_dir() {
                if walk.touched.contains(&rel)
                    || !lower
                        .as_ref()
                        .is_some_and(|l| same(&l.path, &l.meta, &path, &meta).unwrap_or(false))
                {
                    out.push(Change::upsert(rel.clone()));
                }
                self.walk_copy(walk, &rel, out)?;
            } else if keep_unless_same(lower.as_ref(), &path, &meta)? {
                out.push(Change::upsert(rel));
            }
        }
        Ok(())
    }
}

/// What one [`Upper::changes`] walk keeps besides real changes.
struct Walk {
    /// Directories a mount stub gave a new mtime, kept in the layer though
    /// nothing else about them changed ([`Stub::touched_parent`]).
    touched: Vec<PathBuf>,
}

/// Whether a non-directory must be in the layer.
fn keep_unless_same(
    lower: Option<&overlay::Found>,
    path: &Path,
    meta: &Metadata,
) -> Result<bool, ExecError> {
    if meta.is_file() && meta.nlink() > 1 {
        return Ok(true);
    }
    match lower {
        None => Ok(true),
        Some(l) => Ok(!same(&l.path, &l.meta, path, meta).map_err(io_err(path))?),
    }
}

/// Same type, permissions, owner, xattrs and content (modification times
/// deliberately ignored).
fn same(a: &Path, am: &Metadata, b: &Path, bm: &Metadata) -> io::Result<bool> {
    let (at, bt) = (am.file_type(), bm.file_type());
    let type_eq = (at.is_dir() && bt.is_dir())
        || (at.is_file() && bt.is_file())
        || (at.is_symlink() && bt.is_symlink())
        || (at.is_char_device() && bt.is_char_device())
        || (at.is_block_device() && bt.is_block_device())
        || (at.is_fifo() && bt.is_fifo())
        || (at.is_socket() && bt.is_socket());
    if !type_eq || am.mode() != bm.mode() || am.uid() != bm.uid() || am.gid() != bm.gid() {
        return Ok(false);
    }
    if (at.is_char_device() || at.is_block_device()) && am.rdev() != bm.rdev() {
        return Ok(false);
    }
    if at.is_symlink() && std::fs::read_link(a)? != std::fs::read_link(b)? {
        return Ok(false);
    }
    if xattrs(a) != xattrs(b) {
        return Ok(false);
    }
    if at.is_file() {
        return same_content(a, am, b, bm);
    }
    Ok(true)
}

fn xattrs(p: &Path) -> Vec<(std::ffi::OsString, Option<Vec<u8>>)> {
    let mut v: Vec<_> = match xattr::list(p) {
        Ok(names) => names
            .filter(|n| !is_overlay_xattr(n))
            .map(|n| {
                let val = xattr::get(p, &n).ok().flatten();
                (n, val)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn same_content(a: &Path, am: &Metadata, b: &Path, bm: &Metadata) -> io::Result<bool> {
    if am.len() != bm.len() {
        return Ok(false);
    }
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Drop for Upper {
    fn drop(&mut self) {
        // Best effort: a leftover scratch dir is only disk space, which the
        // store's garbage collection reclaims.
        let _ = remove_tree(&self.state);
    }
}
