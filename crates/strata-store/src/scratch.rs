//! Scratch space under `$STRATA_ROOT/tmp`: directories a build, an export
//! or a cache push works in, each owned by the process that made it.
//!
//! Each directory `tmp/<kind>-<random>` has an owner lock beside it,
//! `tmp/<kind>-<random>.lock`, created first and held (`flock`) for the
//! directory's whole life; dropping the [`ScratchDir`] removes the directory,
//! then the lock file. A process killed (SIGKILL, a crash, power loss) leaves
//! both behind, and its lock is released by the kernel. So anyone can tell
//! stale scratch from live scratch without trusting pids or ages: a lock that
//! can be taken, or a directory without its lock file, belongs to nobody.
//! The lock sits beside the directory rather than inside it so that there is
//! no moment where the directory exists without its lock: the lock file comes
//! first and goes last.
//!
//! Loose files in `tmp/` (the database being created, see `db::create_db`)
//! are only made under the store's writer lock, so a sweeper holding that
//! lock may remove them too. Inside `containers/<id>/`, a `strata run` that
//! was killed leaves its step's state directory (`step-*`, the container's
//! writable upper directory while it ran); it is stale once the container's
//! owner process is gone.
//!
//! A build sweeps at its start with [`Store::sweep_scratch_aside`]: under
//! the store lock it only renames each stale entry into a scratch directory
//! of its own (`tmp/sweep-<random>`, owner-locked like any other), and it
//! deletes them after releasing the lock, so removing a large stale tree
//! does not hold up other processes' commits.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::*;

/// Suffix of the owner lock file beside each scratch directory.
const LOCK_SUFFIX: &str = ".lock";

/// A scratch directory owned by this process; removed on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held (flock, exclusive) until drop; a sweeper that can take it knows
    /// the owner is gone.
    _lock: File,
}

impl ScratchDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // The directory first, the lock last: while the lock file exists
        // and is held, nobody else touches the directory.
        if self.path.exists() {
            let _ = remove_any(&self.path);
        }
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// One piece of stale scratch: what it is, where, and how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScratchEntry {
    pub path: PathBuf,
    /// `build`, `rootfs`, `cache-push`, `container step`, `file`, …: the
    /// prefix of its name, which says what made it.
    pub kind: String,
    /// Bytes on disk (blocks allocated: sparse files count as stored).
    pub bytes: u64,
}

/// What a sweep found (and, when it removes, removed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScratchReport {
    pub entries: Vec<ScratchEntry>,
    /// Stale scratch a sweep could not remove, with why (rootless, files
    /// owned by subordinate IDs need the executor's remover).
    pub failed: Vec<(PathBuf, String)>,
}

/// Removes one stale tree; the store's own is [`remove_any`], the builder
/// passes the executor's (which enters the user namespace when rootless).
pub type Remover<'a> = &'a dyn Fn(&Path) -> std::result::Result<(), String>;

impl ScratchReport {
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// Records `e` as found, or (with a remover) as removed; a failed
    /// removal goes to `failed` instead. Says whether `e` is gone or only
    /// reported.
    fn take(&mut self, e: ScratchEntry, remove: Option<Remover>) -> bool {
        match remove.map(|r| r(&e.path)) {
            Some(Err(why)) => {
                self.failed.push((e.path, why));
                false
            }
            _ => {
                self.entries.push(e);
                true
            }
        }
    }
}

impl Store {
    /// Makes a scratch directory `tmp/<kind>-<random>` owned by this process
    /// until the returned value is dropped.
    pub fn scratch_dir(&self, kind: &str) -> Result<ScratchDir> {
        let tmp = self.root.join("tmp");
        fs_err::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        loop {
            let lock_file = tempfile::Builder::new()
                .prefix(&format!("{kind}-"))
                .suffix(LOCK_SUFFIX)
                .tempfile_in(&tmp)
                .map_err(io_err(&tmp))?;
            let (file, lock_path) = lock_file.keep().map_err(|e| StoreError::Io {
                path: tmp.clone(),
                source: e.error,
            })?;
            file.lock().map_err(io_err(&lock_path))?;
            // A sweeper may have taken the lock between its creation and
            // ours and removed the file: ours is then an unlinked inode that
            // protects nothing. Start again under a new name.
            let ours = file.metadata().map_err(io_err(&lock_path))?;
            let same = std::fs::metadata(&lock_path)
                .is_ok_and(|m| m.dev() == ours.dev() && m.ino() == ours.ino());
            if !same {
                continue;
            }
            let path = dir_of_lock(&lock_path);
            if std::fs::symlink_metadata(&path).is_ok() {
                remove_any(&path)?;
            }
            fs_err::create_dir(&path).map_err(io_err(&path))?;
            return Ok(ScratchDir {
                path,
                lock_path,
                _lock: file,
            });
        }
    }

    /// Stale scratch: what no live process owns (see the module docs).
    /// Reading only; takes no lock, so a loose file in `tmp/` is reported
    /// even if a writer is creating it right now.
    pub fn stale_scratch(&self) -> Result<ScratchReport> {
        self.scan_scratch(None)
    }

    /// Removes stale scratch and says what it removed. Live scratch (its
    /// owner holds its lock) is never touched.
    pub fn sweep_scratch(&self, lock: &WriteLock) -> Result<ScratchReport> {
        self.sweep_scratch_with(lock, &|p| remove_any(p).map_err(|e| e.to_string()))
    }

    /// [`Store::sweep_scratch`] with the caller's remover.
    pub fn sweep_scratch_with(&self, _lock: &WriteLock, remover: Remover) -> Result<ScratchReport> {
        self.scan_scratch(Some(remover))
    }

    /// Removes stale scratch as [`Store::sweep_scratch_with`] does, but
    /// holds the store lock only to move each stale entry into a scratch
    /// directory of this call's own (a rename each) and to drop the stale
    /// owner locks; the trees are measured and removed after the lock is
    /// released, so a large stale tree does not hold up other processes'
    /// commits. If this process dies meanwhile, what it moved is its own
    /// stale scratch, swept next time. Must not be called with the store
    /// lock held (it takes it).
    pub fn sweep_scratch_aside(&self, remover: Remover) -> Result<ScratchReport> {
        let aside = self.scratch_dir("sweep")?;
        let mut moved: Vec<(Stale, PathBuf)> = Vec::new();
        let mut report = ScratchReport::default();
        {
            let _lock = self.lock()?;
            for (n, mut stale) in self.find_stale()?.into_iter().enumerate() {
                if std::fs::symlink_metadata(&stale.path).is_ok() {
                    let to = aside.path().join(n.to_string());
                    if std::fs::rename(&stale.path, &to).is_ok() {
                        if let Some((lock_path, _held)) = stale.lock.take() {
                            let _ = std::fs::remove_file(lock_path);
                        }
                        moved.push((stale, to));
                        continue;
                    }
                    // Not movable (on another filesystem): removed in
                    // place, under the lock, as before; a failure keeps the
                    // lock file, which the directory needs.
                    let found = entry(&stale.path, &stale.path, stale.container_step);
                    if !report.take(found, Some(remover)) {
                        continue;
                    }
                }
                if let Some((lock_path, _held)) = stale.lock {
                    let _ = std::fs::remove_file(lock_path);
                }
            }
        }
        for (was, now) in moved {
            let found = entry(&was.path, &now, was.container_step);
            if let Err(why) = remover(&now) {
                report.failed.push((was.path, why));
            } else {
                report.entries.push(found);
            }
        }
        // `aside`, empty now, goes on drop (with whatever failed, for the
        // next sweep).
        Ok(report)
    }

    fn scan_scratch(&self, remove: Option<Remover>) -> Result<ScratchReport> {
        let mut report = ScratchReport::default();
        for stale in self.find_stale()? {
            // A failed removal keeps the lock file: the directory needs it.
            if std::fs::symlink_metadata(&stale.path).is_ok()
                && !report.take(
                    entry(&stale.path, &stale.path, stale.container_step),
                    remove,
                )
            {
                continue;
            }
            if let (Some((lock_path, _held)), Some(_)) = (stale.lock, remove) {
                let _ = std::fs::remove_file(lock_path);
            }
        }
        Ok(report)
    }

    /// What no live process owns (see the module docs): stale scratch
    /// directories with their owner locks (taken, held by the returned
    /// values), lock files whose directory is gone, loose entries, and
    /// dead containers' step directories.
    fn find_stale(&self) -> Result<Vec<Stale>> {
        let tmp = self.root.join("tmp");
        let mut names: Vec<(PathBuf, std::fs::FileType)> = Vec::new();
        match fs_err::read_dir(&tmp) {
            Ok(rd) => {
                for e in rd {
                    let e = e.map_err(io_err(&tmp))?;
                    let t = e.file_type().map_err(io_err(e.path()))?;
                    names.push((e.path(), t));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&tmp)(e)),
        }
        // Lock files first: the live ones protect their directories.
        let mut live_dirs = std::collections::BTreeSet::new();
        let mut stale = Vec::new();
        for (p, t) in &names {
            if !t.is_file() || !p.to_string_lossy().ends_with(LOCK_SUFFIX) {
                continue;
            }
            let dir = dir_of_lock(p);
            // Held while we look (a sweep that removes keeps it until the
            // directory is gone, so its owner cannot be mid-creation).
            match File::open(p) {
                Ok(f) => match f.try_lock() {
                    Ok(()) => stale.push(Stale {
                        path: dir,
                        lock: Some((p.clone(), f)),
                        container_step: false,
                    }),
                    Err(_) => {
                        live_dirs.insert(dir);
                    }
                },
                // Removed meanwhile by its owner: its directory is going too.
                Err(_) => {
                    live_dirs.insert(dir);
                }
            }
        }
        let with_lock: std::collections::BTreeSet<PathBuf> =
            stale.iter().map(|s| s.path.clone()).collect();
        for (p, t) in &names {
            let is_lock = t.is_file() && p.to_string_lossy().ends_with(LOCK_SUFFIX);
            if is_lock || live_dirs.contains(p) || with_lock.contains(p) {
                continue;
            }
            // A directory whose lock file is gone (its owner was killed
            // after removing the lock? never: the lock goes last; so an
            // older strata's scratch) or a loose file.
            stale.push(Stale {
                path: p.clone(),
                lock: None,
                container_step: false,
            });
        }
        self.dead_container_steps(&mut stale)?;
        Ok(stale)
    }

    /// `containers/<id>/step-*` of containers whose `strata run` was killed.
    fn dead_container_steps(&self, stale: &mut Vec<Stale>) -> Result<()> {
        for c in self.containers()? {
            if !c.is_dead() {
                continue;
            }
            let dir = self.container_dir(&c.id);
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if !e.file_name().to_string_lossy().starts_with("step-") {
                    continue;
                }
                stale.push(Stale {
                    path: e.path(),
                    lock: None,
                    container_step: true,
                });
            }
        }
        Ok(())
    }
}

/// One piece of stale scratch, as found.
struct Stale {
    path: PathBuf,
    /// Its owner lock file, taken by the finder and held while this lives.
    lock: Option<(PathBuf, File)>,
    container_step: bool,
}

/// `tmp/build-x.lock` -> `tmp/build-x`.
fn dir_of_lock(lock: &Path) -> PathBuf {
    let s = lock.as_os_str().to_string_lossy();
    PathBuf::from(s.strip_suffix(LOCK_SUFFIX).unwrap_or(&s))
}

/// What the stale entry `was` is, measured where it is `now` (the same
/// path, or where a sweep moved it).
fn entry(was: &Path, now: &Path, container_step: bool) -> ScratchEntry {
    let name = was
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind = if container_step {
        "container step".to_owned()
    } else {
        match name.rsplit_once('-') {
            Some((k, _))
                if !k.is_empty() && std::fs::symlink_metadata(now).is_ok_and(|m| m.is_dir()) =>
            {
                k.to_owned()
            }
            _ => "file".to_owned(),
        }
    };
    ScratchEntry {
        path: was.to_path_buf(),
        kind,
        bytes: disk_usage(now),
    }
}

/// Bytes allocated under `p` (not following symlinks), as `du` counts them.
pub fn disk_usage(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(cur) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&cur) else {
            continue;
        };
        total += m.blocks() * 512;
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&cur)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
    total
}

/// Removes a file or a whole tree (GC and the scratch sweep).
pub(crate) fn remove_any(p: &Path) -> Result<()> {
    let meta = fs_err::symlink_metadata(p).map_err(io_err(p))?;
    if meta.is_dir() {
        fs_err::remove_dir_all(p).map_err(io_err(p))
    } else {
        fs_err::remove_file(p).map_err(io_err(p))
    }
}
