//! The one way strata writes a file that must never be seen half-written:
//! write to a temporary name in the same directory, fsync, rename over the
//! target, fsync the directory (exported archives skip the fsyncs:
//! [`AtomicFile::commit_unsynced`]). Crash safety is decided here and
//! nowhere else.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written that appears at its final path only on [`AtomicFile::commit`].
/// Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target`; the parent directory must exist.
    pub fn create(target: impl Into<PathBuf>) -> io::Result<Self> {
        let target = target.into();
        let dir = parent_dir(&target);
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("creating a temporary file in {}: {e}", dir.display()),
                )
            })?;
        Ok(Self { tmp, target })
    }

    /// Like [`AtomicFile::create`], for a file handed to users (an exported
    /// archive, an iidfile): it gets the mode a plain `open(2)` would give,
    /// 0666 minus the umask, instead of the temporary file's private 0600.
    pub fn create_shared(target: impl Into<PathBuf>) -> io::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let f = Self::create(target)?;
        f.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o666 & !umask()))?;
        Ok(f)
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        self.tmp.as_file_mut()
    }

    /// Flushes the data to disk and renames it into place.
    pub fn commit(self) -> io::Result<()> {
        let target = self.target.clone();
        self.commit_to(&target)
    }

    /// Renames the file into place without flushing it to disk first: for
    /// an output handed to the user (an exported archive), written as
    /// `docker save -o` writes one. It is still never seen half-written (a
    /// process killed before this leaves no file at the target), but
    /// surviving a power loss right after is left to the user's `sync`.
    /// The store's own files always go through [`AtomicFile::commit`].
    pub fn commit_unsynced(self) -> io::Result<()> {
        let target = self.target.clone();
        self.tmp.persist(&target).map_err(|e| {
            io::Error::new(
                e.error.kind(),
                format!("renaming into {}: {}", target.display(), e.error),
            )
        })?;
        Ok(())
    }

    /// Like [`AtomicFile::commit`] but to a target chosen only now (a blob
    /// named by the digest of what was written). `target` must be in the same
    /// directory as the one given to [`AtomicFile::create`].
    pub fn commit_to(self, target: &Path) -> io::Result<()> {
        self.tmp.as_file().sync_all()?;
        let target = target.to_owned();
        self.tmp.persist(&target).map_err(|e| {
            io::Error::new(
                e.error.kind(),
                format!("renaming into {}: {}", target.display(), e.error),
            )
        })?;
        sync_dir(parent_dir(&target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// Writes `data` to `target` atomically.
pub fn atomic_write(target: impl Into<PathBuf>, data: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(data)?;
    f.commit()
}

/// Like [`atomic_write`], with [`AtomicFile::create_shared`]'s mode.
pub fn atomic_write_shared(target: impl Into<PathBuf>, data: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create_shared(target)?;
    f.write_all(data)?;
    f.commit()
}

/// The process umask, read from /proc (setting it to read it back would race
/// with other threads creating files); 022 if /proc does not say.
pub fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// fsyncs a directory so that a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_makes_file_visible() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        atomic_write(&p, b"abc").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn drop_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"partial").unwrap();
        }
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
