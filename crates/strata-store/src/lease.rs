//! Leases and per-key locks: what lets builds and readers run beside each
//! other and beside GC without holding the store lock for their whole run.
//!
//! A lease is a file `leases/<pid>-<random>.lease` that its process holds
//! with an `flock` for as long as the [`Lease`] value lives. It lists digests
//! (blobs, and layers' diffIDs), one a line, that the process is writing or
//! reading. GC treats every digest named by a live lease as a root, and
//! removes lease files whose flock it can take (their process died: the
//! kernel dropped the lock with it).
//!
//! Two rules make that exact:
//! - A lease file is created and locked under the store lock, so GC (which
//!   holds the store lock for its whole scan-and-delete) never sees a live
//!   lease unlocked.
//! - Digests are added only under the store lock ([`Lease::add`] takes the
//!   [`WriteLock`] as proof), either before the blob is committed or after
//!   checking that what names it still exists ([`Lease::hold_image`]). So
//!   between "this process decided to use a blob" and "the blob is recorded
//!   in the lease" there is no moment in which GC can run.
//!
//! A per-key lock ([`Store::key_lock`], `locks/<kind>-<hex>`) makes "unpack
//! this layer", "download this blob", "compress this layer with this codec
//! and level" happen once per key across processes: the second process
//! waits on the flock and then finds the work done. GC
//! removes the lock files of keys nothing holds; a process opens a key's lock
//! file only after leasing the key, so a lock file in use is never removed.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_oci::Digest;

use crate::db::*;
use crate::*;

/// A set of digests this process is using, kept safe from GC while the
/// value lives (see the module docs). Shared between a build's threads.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
    state: Mutex<LeaseFile>,
}

#[derive(Debug)]
struct LeaseFile {
    /// Holds the flock for the lease's life; lines are appended to it.
    file: std::fs::File,
    held: BTreeSet<Digest>,
}

/// What a per-key lock serialises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Making `snapshots/<diffID>`.
    Snapshot,
    /// Putting a blob into `blobs/` (a download, a re-encoding).
    Blob,
    /// Writing `indexes/<diffID>.json`.
    Index,
    /// Compressing a layer for shipping: keyed by the sha256 of its
    /// (diffID, codec, level) record key (`ship.rs`).
    Encoding,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Snapshot => "snapshot-",
            KeyKind::Blob => "blob-",
            KeyKind::Index => "index-",
            KeyKind::Encoding => "encoding-",
        }
    }
}

/// An exclusive per-key lock across processes, released on drop.
#[derive(Debug)]
pub struct KeyLock {
    _file: std::fs::File,
}

/// Live leases' digests, as GC reads them.
#[derive(Debug, Default)]
pub(crate) struct LeaseRoots {
    pub(crate) digests: BTreeSet<Digest>,
    /// How many leases are live (their process holds the flock).
    pub(crate) live: usize,
    /// Lease files of dead processes, removed now.
    pub(crate) removed: usize,
}

const LEASE_SUFFIX: &str = ".lease";

impl Store {
    fn leases_dir(&self) -> PathBuf {
        self.root.join("leases")
    }

    fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Takes a new, empty lease; `purpose` is written into the file for
    /// people looking at the store (`build`, `save`). Takes the store lock
    /// briefly, so it must not be called while this thread holds it (see
    /// [`Store::lease_locked`]).
    pub fn lease(&self, purpose: &str) -> Result<Lease> {
        let lock = self.lock()?;
        self.lease_locked(&lock, purpose)
    }

    /// [`Store::lease`] under a store lock the caller holds.
    pub fn lease_locked(&self, _lock: &WriteLock, purpose: &str) -> Result<Lease> {
        let dir = self.leases_dir();
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        let named = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .suffix(LEASE_SUFFIX)
            .tempfile_in(&dir)
            .map_err(io_err(&dir))?;
        let (mut file, path) = named.keep().map_err(|e| io_err(dir.clone())(e.error))?;
        file.lock().map_err(io_err(&path))?;
        // One line for people reading the store; GC skips `#` lines.
        writeln!(file, "# pid {} {purpose}", std::process::id()).map_err(io_err(&path))?;
        Ok(Lease {
            path,
            state: Mutex::new(LeaseFile {
                file,
                held: BTreeSet::new(),
            }),
        })
    }

    /// A lease holding `images` (each with the name it was resolved from,
    /// for the error), for a command that reads them (`save`, `run`,
    /// `push`): [`StoreError::ImageRemoved`] when one was removed since it
    /// was resolved.
    pub fn lease_images<'a>(
        &self,
        purpose: &str,
        images: impl IntoIterator<Item = (&'a ImageRecord, &'a str)>,
    ) -> Result<Lease> {
        let lock = self.lock()?;
        let lease = self.lease_locked(&lock, purpose)?;
        for (img, name) in images {
            lease.hold_image(self, &lock, img, name)?;
        }
        Ok(lease)
    }

    /// Waits for and takes the lock of `key` (see the module docs). The
    /// caller must hold `key` in a lease.
    pub fn key_lock(&self, kind: KeyKind, key: &Digest) -> Result<KeyLock> {
        let dir = self.locks_dir();
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{}{}", kind.prefix(), key.hex()));
        Ok(KeyLock {
            _file: lock_file(&path)?,
        })
    }

    /// Reads every live lease and removes dead ones. Under the store lock,
    /// so no lease is being created or added to meanwhile.
    pub(crate) fn lease_roots(&self, _lock: &WriteLock) -> Result<LeaseRoots> {
        let dir = self.leases_dir();
        let mut roots = LeaseRoots::default();
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(roots),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let path = e.path();
            if !e.file_name().to_string_lossy().ends_with(LEASE_SUFFIX) {
                continue;
            }
            let mut file = match std::fs::OpenOptions::new().read(true).open(&path) {
                Ok(f) => f,
                // Its owner finished and removed it meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            match file.try_lock() {
                Ok(()) => {
                    // Nobody holds it: its process died. Removed while we
                    // hold its lock, so no one can be reviving it.
                    fs_err::remove_file(&path).map_err(io_err(&path))?;
                    roots.removed += 1;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    roots.live += 1;
                    let mut text = String::new();
                    file.read_to_string(&mut text).map_err(io_err(&path))?;
                    roots.digests.extend(parse_lease(&path, &text)?);
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
            }
        }
        Ok(roots)
    }

    /// Removes the key locks of keys outside `live` (see the module docs for
    /// why that cannot take a lock from under anyone). Under the store lock.
    pub(crate) fn remove_dead_key_locks(
        &self,
        _lock: &WriteLock,
        live: &BTreeSet<Digest>,
    ) -> Result<()> {
        let dir = self.locks_dir();
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let key = [
                KeyKind::Snapshot,
                KeyKind::Blob,
                KeyKind::Index,
                KeyKind::Encoding,
            ]
            .iter()
            .find_map(|k| name.strip_prefix(k.prefix()))
            .and_then(|hex| Digest::from_hex(hex).ok());
            if key.is_some_and(|d| !live.contains(&d)) {
                let p = e.path();
                fs_err::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }
}

/// The digests a lease file lists. A line that is not a digest means the
/// file is not what this code writes: GC stops rather than guess.
fn parse_lease(path: &Path, text: &str) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(line.parse::<Digest>().map_err(|_| {
            StoreError::Conflict(format!(
                "lease {}: line {line:?} is not a digest; GC stopped so as not to free what it protects",
                path.display()
            ))
        })?);
    }
    Ok(out)
}

impl Lease {
    /// Adds `digests` (blobs or diffIDs) to the lease. Under the store lock:
    /// call it before committing a blob, or after checking that what names
    /// the digests still exists.
    pub fn add(&self, _lock: &WriteLock, digests: impl IntoIterator<Item = Digest>) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut lines = String::new();
        for d in digests {
            if st.held.insert(d) {
                lines.push_str(&d.to_string());
                lines.push('\n');
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        // No fsync: a lease only matters while its process lives, and other
        // processes see the write at once. One write per call, under the
        // store lock, so GC never reads half a line.
        st.file
            .write_all(lines.as_bytes())
            .map_err(io_err(&self.path))
    }

    /// Leases an image's blobs (config, manifest, layers) and layers, after
    /// checking under the lock that the image is still in the store: a
    /// reader that resolved `name` to `img` and then lost a race with `rmi`
    /// gets [`StoreError::ImageRemoved`], not a missing blob later.
    pub fn hold_image(
        &self,
        store: &Store,
        lock: &WriteLock,
        img: &ImageRecord,
        name: &str,
    ) -> Result<()> {
        let key = img.id.to_string();
        let present = store.read(|txn| Ok(txn.open_table(IMAGES)?.get(key.as_str())?.is_some()))?;
        if !present {
            return Err(StoreError::ImageRemoved(name.to_owned()));
        }
        self.add(lock, image_digests(img))
    }

    /// Leases layers (blobs and diffIDs) that a record the caller just read
    /// names (a cache record, a stage's state): under the lock, and only if
    /// every blob is still there, else `MissingBlob` for the first that is
    /// not. Holding them stops a later GC; a GC that ran before is caught
    /// by the check.
    pub fn hold_layers(
        &self,
        store: &Store,
        lock: &WriteLock,
        layers: &[LayerRecord],
    ) -> Result<()> {
        if let Some(l) = layers.iter().find(|l| !store.has_blob(&l.blob)) {
            return Err(StoreError::MissingBlob { digest: l.blob });
        }
        self.add(lock, layers.iter().flat_map(|l| [l.blob, l.diff_id]))
    }

    /// Whether the lease holds `d`.
    pub fn holds(&self, d: &Digest) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .contains(d)
    }

    /// The lease file, for tests and diagnostics.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed before the flock goes (with the file, after this): GC
        // never finds a lease file it could mistake for a dead one. A failure
        // leaves the file, which the next GC removes as dead.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Every blob and diffID an image needs.
pub(crate) fn image_digests(img: &ImageRecord) -> Vec<Digest> {
    let mut v = vec![img.id, img.manifest];
    for l in &img.layers {
        v.push(l.blob);
        v.push(l.diff_id);
    }
    v
}
