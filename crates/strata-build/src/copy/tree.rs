//! Copying a source tree into the layer directory with its metadata.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::chmod::Chmod;
use super::layered::LayeredSource;
use super::reuse::{FileCopies, break_link, unshare};
use crate::context;
use crate::error::{BuildError, Result, io};

pub(super) fn set_mtime(p: &Path, secs: i64) -> Result<()> {
    unshare(p)?;
    let t = filetime_from(secs);
    let f = fs::File::options().read(true).open(p);
    match f {
        Ok(f)
            if !fs::symlink_metadata(p)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false) =>
        {
            f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
                .map_err(io(format!("setting times on {}", p.display())))
        }
        _ => Ok(()),
    }
}

pub(super) fn filetime_from(secs: i64) -> std::time::SystemTime {
    if secs >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64)
    } else {
        std::time::UNIX_EPOCH
    }
}

/// What holds for every file of one COPY source: which are left out
/// (`.dockerignore`, `--exclude`) and what ownership and mode they get.
#[derive(Clone, Copy)]
pub(super) struct TreeRules<'a> {
    pub(super) ignore: Option<&'a context::Ignore>,
    pub(super) exclude: Option<&'a context::Ignore>,
    pub(super) owner: Option<(u32, u32)>,
    pub(super) chmod: Option<&'a Chmod>,
    /// Counts the files copied, and links unchanged ones from the step's
    /// previous snapshot when it has one.
    pub(super) files: &'a FileCopies<'a>,
    /// Where `src` paths are: `None` on disk (the context, inline files, a
    /// materialised tree), or relative paths in another stage's snapshots.
    pub(super) source: Option<&'a LayeredSource>,
}

/// Copies `src` (file, symlink or directory) to `dst`. For a directory with
/// `contents_only`, its contents go into `dst` (docker's rule for COPY dir).
/// `rel_base` is `src`'s path relative to the context (for ignore rules),
/// `exclude_base` relative to the source (for `--exclude`).
pub(super) fn copy_tree(
    src: &Path,
    dst: &Path,
    rel_base: &str,
    exclude_base: &str,
    rules: TreeRules<'_>,
    contents_only: bool,
) -> Result<()> {
    let TreeRules {
        ignore,
        exclude,
        owner,
        chmod,
        files,
        source,
    } = rules;
    // `disk` is where the bytes are: `src` itself, or the snapshot file
    // that provides it.
    let (meta, disk) = match source {
        Some(layers) => {
            let found = layers.find(src)?;
            (found.meta, found.path)
        }
        None => (
            fs::symlink_metadata(src).map_err(io(format!("reading {}", src.display())))?,
            src.to_owned(),
        ),
    };
    let ft = meta.file_type();
    let (uid, gid) = owner.unwrap_or_else(|| super::owners::image_ids(meta.uid(), meta.gid()));
    if ft.is_dir() {
        if !dst.exists() {
            fs::create_dir(dst).map_err(io(format!("creating {}", dst.display())))?;
        }
        let names: Vec<std::ffi::OsString> = match source {
            Some(layers) => layers.children(src).into_iter().map(Into::into).collect(),
            None => {
                let mut names: Vec<_> = fs::read_dir(src)
                    .map_err(io(format!("reading {}", src.display())))?
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect();
                names.sort();
                names
            }
        };
        for name in names {
            let rel = if rel_base.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel_base}/{}", name.to_string_lossy())
            };
            let local = if exclude_base.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{exclude_base}/{}", name.to_string_lossy())
            };
            if exclude.is_some_and(|ex| ex.excluded(&local)) {
                continue;
            }
            if let Some(ig) = ignore
                && ig.excluded(&rel)
            {
                // An excluded directory is walked for the exceptions that
                // may re-include something in it, and kept only if they do.
                let path = src.join(&name);
                let is_dir = match source {
                    Some(layers) => layers.find(&path).is_ok_and(|f| f.meta.is_dir()),
                    None => fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()),
                };
                if is_dir && ig.descend_excluded(&rel) {
                    let d = dst.join(&name);
                    let existed = d.symlink_metadata().is_ok();
                    copy_tree(&path, &d, &rel, &local, rules, false)?;
                    let empty = fs::read_dir(&d).is_ok_and(|mut r| r.next().is_none());
                    if !existed && empty {
                        fs::remove_dir(&d).map_err(io(format!("removing {}", d.display())))?;
                    }
                }
                continue;
            }
            copy_tree(
                &src.join(&name),
                &dst.join(&name),
                &rel,
                &local,
                rules,
                false,
            )?;
        }
        if !contents_only {
            finish_meta(dst, &meta, uid, gid, chmod)?;
        }
    } else if ft.is_symlink() {
        let target =
            fs::read_link(&disk).map_err(io(format!("reading link {}", disk.display())))?;
        if dst.symlink_metadata().is_ok() {
            fs::remove_file(dst).map_err(io(format!("replacing {}", dst.display())))?;
        }
        std::os::unix::fs::symlink(&target, dst)
            .map_err(io(format!("creating link {}", dst.display())))?;
        super::owners::set_owner(dst, uid, gid, None)?;
    } else if ft.is_file() {
        if dst.is_dir() {
            return Err(BuildError::Other(format!(
                "cannot copy file {} over directory {}",
                src.display(),
                dst.display()
            )));
        }
        let mode = mode_of(&meta, chmod);
        let linked = match source {
            // A snapshot's file is immutable: it is shared, not copied.
            Some(_) => files.try_link_snapshot(&disk, dst, &meta, (uid, gid), mode),
            None => files.try_link(src, dst, &meta, (uid, gid), mode),
        };
        if linked {
            return Ok(());
        }
        // Never write through a link into a snapshot.
        break_link(dst)?;
        copy_file(&disk, dst, &meta).map_err(io(format!("copying {}", disk.display())))?;
        files.count_copy();
        finish_meta(dst, &meta, uid, gid, chmod)?;
    }
    Ok(())
}

/// Copies a file's bytes: in the kernel (`copy_file_range`) unless the
/// source has holes (fewer blocks allocated than its size), which are kept
/// as holes instead of being written out as zeros.
fn copy_file(src: &Path, dst: &Path, meta: &fs::Metadata) -> std::io::Result<()> {
    if meta.blocks() * 512 >= meta.len() {
        return fs::copy(src, dst).map(|_| ());
    }
    let mut from = fs::File::open(src)?;
    let mut to = fs::File::create(dst)?;
    strata_oci::sparse::copy_sparse(&mut from, &mut to).map(|_| ())
}

pub(super) fn finish_meta(
    dst: &Path,
    meta: &fs::Metadata,
    uid: u32,
    gid: u32,
    chmod: Option<&Chmod>,
) -> Result<()> {
    unshare(dst)?;
    let mode = mode_of(meta, chmod);
    super::owners::set_owner(dst, uid, gid, Some(mode))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))
        .map_err(io(format!("chmod {}", dst.display())))?;
    set_mtime(dst, meta.mtime())
}

/// The permission bits a copy of a file or directory with `meta` gets.
fn mode_of(meta: &fs::Metadata, chmod: Option<&Chmod>) -> u32 {
    match chmod {
        Some(c) => c.apply(meta.mode() & 0o7777, meta.is_dir()),
        None => meta.mode() & 0o7777,
    }
}
