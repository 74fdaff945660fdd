//! Reusing the previous snapshot of a COPY step: after a change to some
//! context files, the files that did not change are hard-linked from the
//! snapshot the same step (same instruction, destination and parent state)
//! made last time, instead of being read and copied again, so the copy's
//! cost follows what changed.
//!
//! Snapshots are immutable, so sharing their inodes is safe as long as
//! nothing writes through a link: a linked file gets no metadata call
//! (it already has the mode, owner and mtime a copy would get, which is
//! checked before linking), a later source landing on the same path first
//! unlinks it ([`break_link`]), overlayfs mounts snapshots as read-only
//! lowers, and the copying fallback (`strata_exec::flatten`) copies lowers
//! into a fresh root. The layer's tar is then byte-identical to a fresh
//! copy's: its writer reads the same mode, owner, mtime and content, and
//! each inode appears once in the layer, so no file becomes a tar hard link.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_store::{CacheRecord, EntryKind, IndexEntry, IndexItem, Lease, Store};

use crate::api::InternalWork;
use crate::context::HashCache;
use crate::error::{Result, io};
use crate::solver::{Solver, State};

/// Where the record naming a step's last snapshot is kept in the build
/// cache table: under its own prefix, so it is never taken for a step's
/// cache record. It names no blob, so it keeps nothing from GC: a snapshot
/// that is gone is simply not reused.
const RECORD_PREFIX: &str = "copy-previous:";

/// The files one COPY step copied and linked, and what it may link from.
#[derive(Default)]
pub(super) struct FileCopies<'a> {
    copied: Cell<usize>,
    linked: Cell<usize>,
    shared: Cell<usize>,
    /// Never link from a source's snapshots ([`FileCopies::copying_only`]).
    copy_only: bool,
    previous: Option<Previous<'a>>,
    /// Inodes linked into this layer: each at most once, so that the tar
    /// writer never records one of them as a hard link.
    inodes: RefCell<HashSet<(u64, u64)>>,
}

/// The previous snapshot of the step, with its layer's index.
struct Previous<'a> {
    snapshot: PathBuf,
    /// The new layer's root: a destination's path under it is its path in
    /// the previous snapshot too.
    layer_root: PathBuf,
    /// Regular files of the previous layer by path.
    files: HashMap<String, IndexEntry>,
    hashes: &'a HashCache,
}

impl<'a> FileCopies<'a> {
    /// Counting only: nothing to link from but a `COPY --from` source's
    /// snapshots.
    pub(super) fn counting() -> Self {
        Self::default()
    }

    /// Copying every file, linking none (what a writable mount is made of).
    pub(super) fn copying_only() -> Self {
        Self {
            copy_only: true,
            ..Self::default()
        }
    }

    /// Links from the snapshot of layer `diff_id` where a file is unchanged
    /// (judged by `hashes`, the context's content hashes this build knows).
    /// Counting only when the snapshot or its index is not there.
    pub(super) fn from_previous(
        store: &Store,
        lease: &Lease,
        diff_id: Option<Digest>,
        layer_root: &Path,
        hashes: &'a HashCache,
    ) -> Result<Self> {
        let Some(diff_id) = diff_id else {
            return Ok(Self::counting());
        };
        // Leased before it is checked, so GC keeps it while files are linked
        // from it (a link already made would survive GC anyway).
        lease.add(&store.lock()?, [diff_id])?;
        if !store.snapshot_ready(&diff_id)? {
            return Ok(Self::counting());
        }
        let Some(index) = store.stored_layer_index(&diff_id) else {
            return Ok(Self::counting());
        };
        let files = index
            .items
            .into_iter()
            .filter_map(|item| match item {
                IndexItem::Entry(e) if e.kind == EntryKind::File => Some((e.path.clone(), e)),
                _ => None,
            })
            .collect();
        Ok(Self {
            previous: Some(Previous {
                snapshot: store.snapshot_dir(&diff_id),
                layer_root: layer_root.to_owned(),
                files,
                hashes,
            }),
            ..Self::default()
        })
    }

    /// Files read and copied.
    pub(super) fn copied(&self) -> usize {
        self.copied.get()
    }

    /// Files hard-linked from the previous snapshot.
    pub(super) fn linked(&self) -> usize {
        self.linked.get()
    }

    /// Files hard-linked from a `COPY --from` source's snapshots.
    pub(super) fn shared(&self) -> usize {
        self.shared.get()
    }

    pub(super) fn count_copy(&self) {
        self.copied.set(self.copied.get() + 1);
    }

    /// Hard-links `dst` to the previous snapshot's file at the same path
    /// when that file is what copying `src` (stat `meta`) with owner
    /// `uid:gid` and permission bits `mode` would make: same content
    /// (blake3, from the index and the context's hash cache, so neither is
    /// read), size, mode, owner and mtime. Returns whether it linked.
    pub(super) fn try_link(
        &self,
        src: &Path,
        dst: &Path,
        meta: &fs::Metadata,
        owner: (u32, u32),
        mode: u32,
    ) -> bool {
        let Some(prev) = &self.previous else {
            return false;
        };
        let Some(rel) = dst
            .strip_prefix(&prev.layer_root)
            .ok()
            .and_then(Path::to_str)
        else {
            return false;
        };
        let Some(entry) = prev.files.get(rel) else {
            return false;
        };
        if entry.size != meta.len()
            || entry.mode != mode
            || (entry.uid, entry.gid) != (u64::from(owner.0), u64::from(owner.1))
        {
            return false;
        }
        let Some(hash) = prev.hashes.known_hash(src, meta) else {
            return false;
        };
        if entry.content.as_deref() != Some(blake3::Hash::from(hash).to_hex().as_str()) {
            return false;
        }
        let old = prev.snapshot.join(rel);
        let Ok(old_meta) = fs::symlink_metadata(&old) else {
            return false;
        };
        // The snapshot on disk, not only its index: the mtime is not in the
        // index, and owners on disk are host IDs when rootless.
        if !old_meta.is_file()
            || old_meta.len() != meta.len()
            || old_meta.mtime() != meta.mtime()
            || old_meta.mode() & 0o7777 != mode
            || super::owners::image_ids(old_meta.uid(), old_meta.gid()) != owner
            || fs::symlink_metadata(dst).is_ok()
        {
            return false;
        }
        if !self.link_once(&old, &old_meta, dst) {
            return false;
        }
        self.linked.set(self.linked.get() + 1);
        true
    }

    /// Hard-links `dst` to `src`, a file in a `COPY --from` source's
    /// snapshot (stat `meta`), when that file is what a copy of it with
    /// owner `uid:gid` and permission bits `mode` would make: the same
    /// owner and mode (a copy keeps content and mtime), and no extended
    /// attribute the layer's tar would record (a copy does not carry
    /// them). Returns whether it linked.
    pub(super) fn try_link_snapshot(
        &self,
        src: &Path,
        dst: &Path,
        meta: &fs::Metadata,
        owner: (u32, u32),
        mode: u32,
    ) -> bool {
        if self.copy_only
            || !meta.is_file()
            || meta.mode() & 0o7777 != mode
            || super::owners::image_ids(meta.uid(), meta.gid()) != owner
            || fs::symlink_metadata(dst).is_ok()
            || strata_oci::layer::has_recorded_xattrs(src)
        {
            return false;
        }
        if !self.link_once(src, meta, dst) {
            return false;
        }
        self.shared.set(self.shared.get() + 1);
        true
    }

    /// Links `dst` to `src` unless this layer already holds `src`'s inode.
    fn link_once(&self, src: &Path, meta: &fs::Metadata, dst: &Path) -> bool {
        let inode = (meta.dev(), meta.ino());
        if !self.inodes.borrow_mut().insert(inode) {
            return false;
        }
        // Where linking is refused (fs.protected_hardlinks on a file the
        // user does not own, another filesystem, a full directory), the
        // file is copied instead.
        if fs::hard_link(src, dst).is_err() {
            self.inodes.borrow_mut().remove(&inode);
            return false;
        }
        true
    }
}

impl Solver<'_> {
    /// What a COPY step with `identity` (`None`: one that never links) may
    /// link from: the snapshot its step wrote last, unless the cache is off.
    pub(super) fn previous_copies(
        &self,
        identity: Option<&str>,
        state: &State,
        layer_root: &Path,
    ) -> Result<FileCopies<'_>> {
        let off = self.opts.no_cache || self.plan.no_cache_stages.contains(&state.stage);
        let previous = match identity.filter(|_| !off) {
            Some(id) => previous_layer(self.store, id)?,
            None => None,
        };
        let hashes = &self.context_files.hash_cache;
        FileCopies::from_previous(self.store, self.lease, previous, layer_root, hashes)
    }

    /// The step's progress line for its files, when it copied any.
    pub(super) fn report_copies(&self, files: &FileCopies<'_>, started: std::time::Instant) {
        let (copied, linked, shared) = (files.copied(), files.linked(), files.shared());
        if copied + linked + shared > 0 {
            self.emit_internal(
                InternalWork::CopyingFiles {
                    copied,
                    linked,
                    shared,
                },
                started,
            );
        }
    }
}

/// Unlinks `dst` when it is a file shared with a snapshot (a regular file
/// with several links: the layer directory makes none of its own), so that
/// what is written next makes a file of its own.
pub(super) fn break_link(dst: &Path) -> Result<()> {
    if let Ok(m) = fs::symlink_metadata(dst)
        && m.is_file()
        && m.nlink() > 1
    {
        fs::remove_file(dst).map_err(io(format!("replacing {}", dst.display())))?;
    }
    Ok(())
}

/// Makes `p` a file of its own when it is shared with a snapshot, before
/// its metadata is changed: a copy of it (content, mode, owner, times)
/// renamed over it, so the change lands where a fresh copy would have it
/// and never in the snapshot. Only reached when a later source of the same
/// COPY lands on a linked file as a directory would (its metadata copied
/// onto the file, as a fresh copy does).
pub(super) fn unshare(p: &Path) -> Result<()> {
    let Ok(m) = fs::symlink_metadata(p) else {
        return Ok(());
    };
    if !m.is_file() || m.nlink() < 2 {
        return Ok(());
    }
    let tmp = p.with_file_name(format!(
        ".strata-unshare-{}",
        p.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let what = || format!("making {} a file of its own", p.display());
    fs::copy(p, &tmp).map_err(io(what()))?;
    // Rootless, the copy cannot be given a subordinate ID here; every
    // caller that changes metadata sets the owner itself (deferred).
    if !strata_exec::owners::deferred() {
        std::os::unix::fs::lchown(&tmp, Some(m.uid()), Some(m.gid())).map_err(io(what()))?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io(what()))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.mtime().max(0) as u64);
    fs::File::open(&tmp)
        .and_then(|f| f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t)))
        .map_err(io(what()))?;
    fs::rename(&tmp, p).map_err(io(what()))
}

/// The step's identity across builds: its cache key without the sources'
/// contents (the parent state's key, the instruction's flags, destination
/// and source words).
pub(super) fn step_identity(parent: &str, flags: &str, dest: &str, words: &[String]) -> String {
    let words = words.join("\0");
    let parts: [&[u8]; 5] = [
        b"copy-previous",
        parent.as_bytes(),
        flags.as_bytes(),
        dest.as_bytes(),
        words.as_bytes(),
    ];
    format!("{RECORD_PREFIX}{}", crate::cache::key_of(&parts))
}

/// The layer the step with `identity` wrote last, if recorded.
fn previous_layer(store: &Store, identity: &str) -> Result<Option<Digest>> {
    Ok(store
        .cache_get(identity)?
        .and_then(|rec| rec.value.get("diff_id")?.as_str()?.parse().ok()))
}

/// Records `diff_id` as the layer the step with `identity` wrote last.
pub(super) fn record_layer(store: &Store, identity: &str, diff_id: &Digest) -> Result<()> {
    let rec = CacheRecord {
        value: serde_json::json!({ "diff_id": diff_id.to_string() }),
        diff_ids: Vec::new(),
        blobs: Vec::new(),
        last_used: strata_store::now_unix(),
    };
    store.cache_put(&store.lock()?, identity, &rec)?;
    Ok(())
}
