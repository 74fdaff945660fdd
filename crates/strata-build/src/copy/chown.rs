//! `--chown` and the ownership of directories COPY creates.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_frontend::Instruction;

use super::tree::set_mtime;
use crate::error::{Result, io};
use crate::solver::{Solver, State};

impl Solver<'_> {
    pub(super) fn resolve_chown(
        &self,
        spec: &str,
        state: &State,
        ins: &Instruction,
    ) -> Result<(u32, u32)> {
        let (u, g) = spec
            .split_once(':')
            .map(|(u, g)| (u, Some(g)))
            .unwrap_or((spec, None));
        let lowers = self.lowers(&state.layers)?;
        let read = |rel: &str| -> String {
            strata_exec::snapshot::lookup(&lowers, Path::new(rel))
                .and_then(|f| fs::read_to_string(f.path).ok())
                .unwrap_or_default()
        };
        let find = |db: &str, name: &str| -> Option<(u32, u32)> {
            db.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.first() == Some(&name)).then(|| {
                    Some((
                        f.get(2)?.parse().ok()?,
                        f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
                    ))
                })?
            })
        };
        let passwd = read("etc/passwd");
        let (uid, primary) = match u.parse::<u32>() {
            Ok(n) => (n, n),
            Err(_) => find(&passwd, u).ok_or_else(|| {
                self.fail(
                    ins,
                    &format!("--chown={spec}: unable to find user {u} in the image's /etc/passwd"),
                )
            })?,
        };
        let gid = match g {
            None => primary,
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => find(&read("etc/group"), g)
                    .map(|(gid, _)| gid)
                    .ok_or_else(|| {
                        self.fail(
                            ins,
                            &format!(
                                "--chown={spec}: unable to find group {g} in the image's /etc/group"
                            ),
                        )
                    })?,
            },
        };
        Ok((uid, gid))
    }

    /// Creates `rel`'s directories in the layer dir, each with the metadata
    /// it has in the image (so the layer doesn't change existing parents);
    /// new ones get `new_mode` and are owned by `owner`, else root (COPY
    /// --chown applies to the directories it creates, as in BuildKit).
    pub(super) fn make_parents_owned(
        &self,
        layer_root: &Path,
        rel: &str,
        lowers: &[PathBuf],
        include_self: bool,
        owner: Option<(u32, u32)>,
        new_mode: u32,
    ) -> Result<()> {
        let mut cur = PathBuf::new();
        let comps: Vec<_> = Path::new(rel).components().collect();
        let n = if include_self {
            comps.len()
        } else {
            comps.len().saturating_sub(1)
        };
        for c in comps.iter().take(n) {
            cur.push(c);
            let p = layer_root.join(&cur);
            if p.exists() {
                continue;
            }
            fs::create_dir(&p).map_err(io(format!("creating {}", p.display())))?;
            let (mode, uid, gid, mtime) = match strata_exec::snapshot::lookup(lowers, &cur) {
                // On disk, rootless snapshots hold host IDs.
                Some(f) if f.meta.is_dir() => {
                    let (uid, gid) = super::owners::image_ids(f.meta.uid(), f.meta.gid());
                    (f.meta.mode() & 0o7777, uid, gid, f.meta.mtime())
                }
                _ => {
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    (new_mode, uid, gid, self.dates.epoch)
                }
            };
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io(format!("chmod {}", p.display())))?;
            super::owners::set_owner(&p, uid, gid, Some(mode))?;
            set_mtime(&p, mtime)?;
        }
        Ok(())
    }
}

/// Gives every entry below `dir` (not `dir` itself, whose owner the
/// directory rules decide) the owner `uid:gid`, modes kept (a chown clears
/// set-id bits; they are set again).
pub(super) fn chown_extracted(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry =
            entry.map_err(|e| crate::error::other(format!("walking {}: {e}", dir.display())))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(path).map_err(io(format!("reading {}", path.display())))?;
        if meta.file_type().is_symlink() {
            super::owners::set_owner(path, uid, gid, None)?;
            continue;
        }
        let mode = meta.mode() & 0o7777;
        super::owners::set_owner(path, uid, gid, Some(mode))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    Ok(())
}
