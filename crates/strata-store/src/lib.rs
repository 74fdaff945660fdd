//! The local image store under `$STRATA_ROOT`: content blobs, unpacked layer
//! snapshots, image records and tags, containers and the build cache, with
//! metadata in one transactional database.
//!
//! Invariant: a crash at any point leaves no tag pointing at a missing image and
//! no layer deleted while something refers to it. Every file write goes through
//! a temp-file + fsync + rename, and the order is always: blobs first, then one
//! metadata transaction (adding); or one metadata transaction first, then the
//! files nothing refers to any more (removing, see [`Store::gc`]). So a crash
//! leaves at worst unreferenced files, which the next garbage collection frees.
//!
//! References are computed, not counted: a blob or layer is live when an image
//! record, a container record or a build-cache record names it. That makes GC
//! exact by construction (there is no counter to drift after a crash).
//!
//! Locking: redb holds an exclusive lock on the database file while it is open,
//! so every operation opens it briefly (retrying while another process has it).
//! Writers additionally hold the store lock ([`Store::lock`]) across "put blobs,
//! then commit metadata", so a concurrent GC cannot free a blob between the two.

mod archive;
mod blobs;
mod image;
mod layer;
mod reference;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use strata_oci::Digest;

pub use archive::{LoadedImage, load_archive, save_archive};
pub use image::{
    commit_container, empty_config, host_arch, import_rootfs, layer_record_for_blob, put_layer,
    write_image,
};
pub use layer::{
    DiffKind, DiffLine, diff_container, diff_images, diff_top_layer, tree_of, write_changes_tar,
};
pub use reference::{familiar, normalize_reference, split_repo_tag};

/// Media type of an uncompressed layer tar.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed layer tar.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an OCI image manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

const IMAGES: TableDefinition<&str, &str> = TableDefinition::new("images");
const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
const LAYERS: TableDefinition<&str, &str> = TableDefinition::new("layers");
const SNAPSHOTS: TableDefinition<&str, &str> = TableDefinition::new("snapshots");
const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");
const CACHE: TableDefinition<&str, &str> = TableDefinition::new("build_cache");
const CTX_META: TableDefinition<&str, &str> = TableDefinition::new("context_meta");
/// Blob digest -> JSON list of `registry/repository` known to hold it (from
/// pulls and pushes), for cross-repository mounts on push.
const BLOB_SOURCES: TableDefinition<&str, &str> = TableDefinition::new("blob_sources");
/// `<diffID> <encoding>` (`zstd-9`, `uncompressed`) -> JSON [`EncodedLayer`]:
/// a layer re-encoded for an export, kept so that the next export with the
/// same compression reuses the blob. Live exactly as long as its layer.
const LAYER_ENCODINGS: TableDefinition<&str, &str> = TableDefinition::new("layer_encodings");

/// How long an operation waits for another process to release the database.
const DB_WAIT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("store database {path}: {source}")]
    Db {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("corrupt record {key} in table {table}: {source}")]
    Record {
        table: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    #[error("{0}")]
    Conflict(String),
    #[error("blob {digest} is missing from the store")]
    MissingBlob { digest: Digest },
    #[error("blob {expected} has content digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("invalid image: {0}")]
    InvalidImage(String),
    #[error(transparent)]
    Blob(strata_oci::blobs::BlobError),
    #[error("archive {path}: {message}")]
    Archive { path: PathBuf, message: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { path, source }
}

/// A reader of a layer blob that yields the uncompressed tar: gzip
/// (`1f 8b`) and zstd (`28 b5 2f fd`) are recognised by their magic bytes.
pub fn decompressed(r: impl std::io::Read + 'static) -> std::io::Result<Box<dyn std::io::Read>> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// One layer of an image, as the image record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar (the config's rootfs.diff_ids entry).
    pub diff_id: Digest,
    /// Digest of the blob as stored (compressed or not).
    pub blob: Digest,
    pub media_type: String,
    /// Stored blob size.
    pub size: u64,
    /// Uncompressed tar size (what `images` SIZE adds up).
    pub uncompressed_size: u64,
}

/// A layer's blob in another encoding than the one it is stored in (made
/// by an export with `compression=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedLayer {
    pub diff_id: Digest,
    pub blob: Digest,
    pub size: u64,
}

/// An image: its config digest is its ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config_size: u64,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch, from the config's `created`.
    pub created: i64,
    /// The image this one was built or committed on top of (local only, like
    /// Docker's parent chain): keeps `prune` from removing a base still needed.
    #[serde(default)]
    pub parent: Option<Digest>,
    /// `registry/repo@sha256:…` names this image was pulled by (the index
    /// digest when the reference named a multi-platform index), as Docker's
    /// RepoDigests.
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

impl ImageRecord {
    /// Sum of uncompressed layer sizes, the SIZE `docker images` shows.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed_size).sum()
    }

    /// ChainIDs of the layers, bottom first (what Docker prints on delete).
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let next = match out.last() {
                None => l.diff_id,
                Some(prev) => Digest::of(format!("{prev} {}", l.diff_id).as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

/// A container: an image plus a writable upper directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    pub image: Digest,
    /// What the user typed for the image (shown by `ps`).
    pub image_name: String,
    pub command: Vec<String>,
    /// The writable layer, under `root/containers/<id>`.
    pub upper: PathBuf,
    pub created: i64,
    /// `created`, `running`, `exited(N)`.
    pub state: String,
}

/// A build cache record: opaque to the store except for what it pins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub value: serde_json::Value,
    /// Layers this record needs kept.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    /// Blobs this record needs kept.
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// When a build last used (stored or hit) this record, Unix seconds:
    /// `builder prune --keep-storage` removes the least recently used first.
    #[serde(default)]
    pub last_used: i64,
}

/// Stat data the solver caches per context path, to skip rehashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtxMeta {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    /// blake3 of the content, hex.
    pub blake3: String,
}

/// One line of `rmi` output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmiEvent {
    Untagged(String),
    Deleted(Digest),
}

/// What `remove_image` may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmiOptions {
    pub force: bool,
    pub no_prune: bool,
}

/// What garbage collection freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: Vec<Digest>,
    pub bytes_freed: u64,
    pub snapshots_removed: usize,
    pub temp_files_removed: usize,
}

/// One thing `check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    /// Whether `--repair` fixed it.
    pub repaired: bool,
}

#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub blobs_checked: usize,
    pub images_checked: usize,
    /// Files nothing refers to (left by an interrupted write; not an error:
    /// GC frees them, as `--repair` does).
    pub unreferenced_blobs: usize,
    pub gc: Option<GcReport>,
}

/// Proof that this process holds the store's writer lock; mutating operations
/// take it so that "put blobs, commit metadata" is never interleaved with GC.
pub struct WriteLock {
    _file: std::fs::File,
}

/// The store. Cheap to open; holds no file open between operations.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
}

impl Store {
    /// `$STRATA_ROOT`, else `/var/lib/strata` for root, else
    /// `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`).
    pub fn default_root() -> PathBuf {
        if let Some(r) = std::env::var_os("STRATA_ROOT").filter(|v| !v.is_empty()) {
            return PathBuf::from(r);
        }
        if is_root() {
            return PathBuf::from("/var/lib/strata");
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("strata");
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        home.join(".local/share/strata")
    }

    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        for sub in [
            "blobs/sha256",
            "tmp",
            "snapshots",
            "containers",
            "downloads",
        ] {
            let d = root.join(sub);
            fs_err::create_dir_all(&d).map_err(|e| StoreError::Io {
                path: d.clone(),
                source: e,
            })?;
        }
        let store = Store {
            root: root.to_path_buf(),
            db_path: root.join("metadata.redb"),
        };
        // Create every table once so that readers never meet a missing table.
        let db = store.db()?;
        store.write_txn(&db, |txn| {
            for t in [
                IMAGES,
                TAGS,
                LAYERS,
                SNAPSHOTS,
                CONTAINERS,
                CACHE,
                CTX_META,
                BLOB_SOURCES,
                LAYER_ENCODINGS,
            ] {
                txn.open_table(t)?;
            }
            Ok(())
        })?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store-wide writer lock (blocking until it is free).
    pub fn lock(&self) -> Result<WriteLock> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(WriteLock { _file: file })
    }

    fn db(&self) -> Result<Database> {
        let start = Instant::now();
        loop {
            match Database::create(&self.db_path) {
                Ok(db) => return Ok(db),
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < DB_WAIT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.db_err(e)),
            }
        }
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.db_path.clone(),
            source: Box::new(e.into()),
        }
    }

    fn write_txn<T>(
        &self,
        db: &Database,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T> {
        let txn = db.begin_write().map_err(|e| self.db_err(e))?;
        let out = match f(&txn) {
            Ok(v) => v,
            Err(TxnError::Db(e)) => return Err(self.db_err(e)),
            Err(TxnError::Store(e)) => return Err(e),
        };
        txn.commit().map_err(|e| self.db_err(e))?;
        Ok(out)
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T, TxnError>) -> Result<T> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.db_err(e))?;
        f(&txn).map_err(|e| match e {
            TxnError::Db(e) => self.db_err(e),
            TxnError::Store(e) => e,
        })
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T> {
        let db = self.db()?;
        self.write_txn(&db, f)
    }

    // ---- blobs ----

    /// Path of a blob (it may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        blobs::path(&self.root, d)
    }

    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Stores what `reader` yields; returns its digest and size.
    pub fn put_blob_reader(
        &self,
        _lock: &WriteLock,
        reader: impl std::io::Read,
    ) -> Result<(Digest, u64)> {
        blobs::put_reader(&self.root, reader)
    }

    pub fn put_blob_bytes(&self, _lock: &WriteLock, data: &[u8]) -> Result<Digest> {
        blobs::put_reader(&self.root, data).map(|(d, _)| d)
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        blobs::read_verified(&self.root, d)
    }

    /// Opens a blob for streaming (unverified: callers hashing it anyway, such
    /// as layer unpacking, verify as they read).
    pub fn open_blob(&self, d: &Digest) -> Result<fs_err::File> {
        let p = self.blob_path(d);
        if !p.is_file() {
            return Err(StoreError::MissingBlob { digest: *d });
        }
        fs_err::File::open(&p).map_err(|e| StoreError::Io { path: p, source: e })
    }

    /// Opens a layer's blob as an uncompressed tar stream (gzip and zstd
    /// blobs are decompressed; the magic bytes decide, not the media type).
    pub fn open_layer_tar(&self, l: &LayerRecord) -> Result<Box<dyn std::io::Read>> {
        let p = self.blob_path(&l.blob);
        decompressed(self.open_blob(&l.blob)?).map_err(io_err(&p))
    }

    /// Moves a verified download (`src`, on the store's filesystem) into the
    /// blob store as `digest`: fsync, rename, fsync the directory. The caller
    /// vouches for the digest (it hashed the content as it arrived).
    pub fn adopt_blob(&self, _lock: &WriteLock, src: &Path, digest: &Digest) -> Result<()> {
        let f = std::fs::File::open(src).map_err(io_err(src))?;
        f.sync_all().map_err(io_err(src))?;
        let dst = self.blob_path(digest);
        fs_err::rename(src, &dst).map_err(io_err(&dst))?;
        let dir = dst.parent().unwrap_or(&self.root);
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    }

    /// Where interrupted downloads wait to be resumed (not swept by GC, so
    /// that the next pull continues them).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Reads an image's config as JSON.
    pub fn image_config(&self, img: &ImageRecord) -> Result<serde_json::Value> {
        let bytes = self.read_blob(&img.id)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::InvalidImage(format!("config {}: {e}", img.id)))
    }

    // ---- images and tags ----

    /// Records an image whose blobs are all stored, and points `tags`
    /// (normalised) at it, in one transaction. Returns the IDs of images that
    /// lost their last tag to this (now dangling).
    pub fn commit_image(
        &self,
        _lock: &WriteLock,
        img: &ImageRecord,
        tags: &[String],
    ) -> Result<Vec<Digest>> {
        for d in [img.id, img.manifest]
            .iter()
            .chain(img.layers.iter().map(|l| &l.blob))
        {
            if !self.has_blob(d) {
                return Err(StoreError::MissingBlob { digest: *d });
            }
        }
        let rec = to_json(img)?;
        self.write(|txn| {
            let mut images = txn.open_table(IMAGES)?;
            let mut layers = txn.open_table(LAYERS)?;
            let mut tagt = txn.open_table(TAGS)?;
            for l in &img.layers {
                layers.insert(l.diff_id.to_string().as_str(), to_json(l)?.as_str())?;
            }
            images.insert(img.id.to_string().as_str(), rec.as_str())?;
            let mut previous = Vec::new();
            for t in tags {
                let old = tagt
                    .insert(t.as_str(), img.id.to_string().as_str())?
                    .map(|g| g.value().to_owned());
                if let Some(old) = old.filter(|o| *o != img.id.to_string()) {
                    previous.push(old);
                }
            }
            drop(tagt);
            let tagt = txn.open_table(TAGS)?;
            let mut dangling = Vec::new();
            for old in previous {
                let still = tagt
                    .iter()?
                    .any(|e| e.map(|(_, v)| v.value() == old).unwrap_or(true));
                if !still && let Ok(d) = old.parse::<Digest>() {
                    dangling.push(d);
                }
            }
            Ok(dangling)
        })
    }

    /// Every image with its (familiar) tags, newest first.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        self.read(|txn| {
            let images = txn.open_table(IMAGES)?;
            let tags = txn.open_table(TAGS)?;
            let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in tags.iter()? {
                let (k, v) = e?;
                by_id
                    .entry(v.value().to_owned())
                    .or_default()
                    .push(k.value().to_owned());
            }
            let mut out = Vec::new();
            for e in images.iter()? {
                let (k, v) = e?;
                let rec: ImageRecord = from_json("images", k.value(), v.value())?;
                let t = by_id.remove(k.value()).unwrap_or_default();
                out.push((rec, t));
            }
            out.sort_by(|a, b| b.0.created.cmp(&a.0.created).then(a.0.id.cmp(&b.0.id)));
            Ok(out)
        })
    }

    /// All tags: normalised reference -> image ID.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>> {
        self.read(|txn| {
            let t = txn.open_table(TAGS)?;
            let mut out = BTreeMap::new();
            for e in t.iter()? {
                let (k, v) = e?;
                let d = parse_digest("tags", k.value(), v.value())?;
                out.insert(k.value().to_owned(), d);
            }
            Ok(out)
        })
    }

    pub fn get_image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        self.read(|txn| {
            let t = txn.open_table(IMAGES)?;
            let key = id.to_string();
            match t.get(key.as_str())? {
                Some(v) => Ok(Some(from_json("images", &key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Finds an image by full ID (`sha256:…` or hex), unique ID prefix, name
    /// (`app`, `app:1`, `docker.io/library/app:latest`) or `name@sha256:…`
    /// (manifest digest).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        resolve_in(&images, name)?.ok_or_else(|| StoreError::NoSuchImage(name.to_owned()))
    }

    /// Points `target` at the image `source` names.
    pub fn tag(&self, _lock: &WriteLock, source: &str, target: &str) -> Result<Digest> {
        let img = self.resolve(source)?;
        let t = normalize_reference(target)?;
        if t.contains('@') {
            return Err(StoreError::InvalidReference(format!(
                "{target}: a tag cannot contain a digest"
            )));
        }
        self.write(|txn| {
            let mut tags = txn.open_table(TAGS)?;
            let images = txn.open_table(IMAGES)?;
            // Re-check inside the transaction: the image may have gone meanwhile.
            if images.get(img.id.to_string().as_str())?.is_none() {
                return Err(StoreError::NoSuchImage(source.to_owned()).into());
            }
            tags.insert(t.as_str(), img.id.to_string().as_str())?;
            Ok(())
        })?;
        Ok(img.id)
    }

    /// `rmi` for one name, with Docker's rules: a name with other tags left
    /// only untags; an image is deleted when no tag and no container needs it
    /// and no child image is built on it; a container using it refuses without
    /// `force`. Layers and blobs nothing needs any more are freed afterwards.
    pub fn remove_image(
        &self,
        lock: &WriteLock,
        name: &str,
        opts: RmiOptions,
    ) -> Result<Vec<RmiEvent>> {
        let images = self.images()?;
        let img =
            resolve_in(&images, name)?.ok_or_else(|| StoreError::NoSuchImage(name.to_owned()))?;
        let by_name = is_by_name(&images, name);
        let events = self.write(|txn| {
            let mut ev = Vec::new();
            let mut tags = txn.open_table(TAGS)?;
            let mut imgs = txn.open_table(IMAGES)?;
            let containers = txn.open_table(CONTAINERS)?;
            let id = img.id.to_string();
            let my_tags: Vec<String> = collect_tags(&tags, &id)?;
            let users: Vec<String> = container_users(&containers, &img.id)?;
            if !(users.is_empty() || opts.force || by_name && my_tags.len() > 1) {
                return Err(StoreError::Conflict(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    short12(&users[0]),
                    img.id.short()
                ))
                .into());
            }
            let untag: Vec<String> = if by_name {
                let n = normalize_reference(name)?;
                if my_tags.contains(&n) { vec![n] } else { Vec::new() }
            } else {
                if my_tags.len() > 1 && !opts.force {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        img.id.short()
                    ))
                    .into());
                }
                my_tags.clone()
            };
            for t in &untag {
                tags.remove(t.as_str())?;
                ev.push(RmiEvent::Untagged(familiar(t)));
            }
            if untag.len() < my_tags.len() {
                return Ok(ev);
            }
            let has_children = all_images(&imgs)?.iter().any(|i| i.parent == Some(img.id));
            if has_children {
                if untag.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
                        img.id.short()
                    ))
                    .into());
                }
                return Ok(ev);
            }
            if !users.is_empty() {
                // Forced: untagged, but the container still pins the image.
                return Ok(ev);
            }
            // Delete, then walk up the parent chain of untagged, unused images.
            let mut next = Some(img.clone());
            while let Some(cur) = next.take() {
                imgs.remove(cur.id.to_string().as_str())?;
                ev.push(RmiEvent::Deleted(cur.id));
                if opts.no_prune {
                    break;
                }
                let Some(parent) = cur.parent else { break };
                let pid = parent.to_string();
                let Some(prec) = imgs.get(pid.as_str())?.map(|g| g.value().to_owned()) else { break };
                let prec: ImageRecord = from_json("images", &pid, &prec)?;
                let used = !collect_tags(&tags, &pid)?.is_empty()
                    || !container_users(&containers, &parent)?.is_empty()
                    || all_images(&imgs)?.iter().any(|i| i.parent == Some(parent));
                if !used {
                    next = Some(prec);
                }
            }
            drop(imgs);
            // Layers no longer needed by anything go in the same transaction,
            // reported as Docker does: by ChainID of the deleted image.
            let freed = prune_layer_table(txn, &self.root)?;
            for c in img.chain_ids().iter().rev().zip(img.layers.iter().rev()) {
                if freed.contains(&c.1.diff_id) {
                    ev.push(RmiEvent::Deleted(*c.0));
                }
            }
            Ok(ev)
        })?;
        self.gc(lock)?;
        Ok(events)
    }

    /// Removes dangling images (no tag, no container, no child), or with `all`
    /// every image no tag or container needs. Returns the `rmi`-style events.
    pub fn prune_images(&self, lock: &WriteLock, all: bool) -> Result<Vec<RmiEvent>> {
        let mut events = Vec::new();
        loop {
            let images = self.images()?;
            let containers = self.containers()?;
            let used: BTreeSet<Digest> = containers.iter().map(|c| c.image).collect();
            let parents: BTreeSet<Digest> = images.iter().filter_map(|(i, _)| i.parent).collect();
            let victim = images
                .iter()
                .find(|(i, t)| t.is_empty() && !used.contains(&i.id) && !parents.contains(&i.id));
            let victim = match victim {
                Some(v) => v,
                None if all => {
                    // Tagged images nothing runs: untag and delete them.
                    match images.iter().find(|(i, t)| {
                        !t.is_empty() && !used.contains(&i.id) && !parents.contains(&i.id)
                    }) {
                        Some(v) => v,
                        None => break,
                    }
                }
                None => break,
            };
            let opts = RmiOptions {
                force: true,
                no_prune: false,
            };
            let id = victim.0.id.to_string();
            let ev = self.remove_image(lock, &id, opts)?;
            if ev.is_empty() {
                break;
            }
            events.extend(ev);
        }
        Ok(events)
    }

    // ---- containers ----

    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.read(|txn| {
            let t = txn.open_table(CONTAINERS)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                out.push(from_json::<ContainerRecord>(
                    "containers",
                    k.value(),
                    v.value(),
                )?);
            }
            out.sort_by_key(|c| std::cmp::Reverse(c.created));
            Ok(out)
        })
    }

    /// Directory for a new container's writable layer.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Adds or updates a container record (its image must exist).
    pub fn put_container(&self, _lock: &WriteLock, c: &ContainerRecord) -> Result<()> {
        let rec = to_json(c)?;
        self.write(|txn| {
            let imgs = txn.open_table(IMAGES)?;
            if imgs.get(c.image.to_string().as_str())?.is_none() {
                return Err(StoreError::NoSuchImage(c.image.to_string()).into());
            }
            let mut t = txn.open_table(CONTAINERS)?;
            for e in t.iter()? {
                let (k, v) = e?;
                let other: ContainerRecord = from_json("containers", k.value(), v.value())?;
                if other.name == c.name && other.id != c.id {
                    return Err(StoreError::Conflict(format!(
                        "Conflict. The container name \"/{}\" is already in use by container \"{}\"",
                        c.name, other.id
                    ))
                    .into());
                }
            }
            t.insert(c.id.as_str(), rec.as_str())?;
            Ok(())
        })
    }

    /// Finds a container by name, full ID or unique ID prefix.
    pub fn resolve_container(&self, name: &str) -> Result<ContainerRecord> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == name || c.id == name) {
            return Ok(c.clone());
        }
        let m: Vec<_> = all
            .iter()
            .filter(|c| !name.is_empty() && c.id.starts_with(name))
            .collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::NoSuchContainer(name.to_owned())),
            _ => Err(StoreError::Conflict(format!(
                "multiple containers match {name}"
            ))),
        }
    }

    /// Removes a container record, then its writable layer.
    pub fn remove_container(&self, lock: &WriteLock, id: &str) -> Result<()> {
        self.write(|txn| {
            let mut t = txn.open_table(CONTAINERS)?;
            if t.remove(id)?.is_none() {
                return Err(StoreError::NoSuchContainer(id.to_owned()).into());
            }
            Ok(())
        })?;
        self.gc(lock)?;
        Ok(())
    }

    // ---- where blobs are known to live remotely ----

    /// Records that `repository` (`registry/path`) holds blob `d`.
    pub fn add_blob_source(&self, _lock: &WriteLock, d: &Digest, repository: &str) -> Result<()> {
        let key = d.to_string();
        self.write(|txn| {
            let mut t = txn.open_table(BLOB_SOURCES)?;
            let mut list: Vec<String> = match t.get(key.as_str())? {
                Some(v) => from_json("blob_sources", &key, v.value())?,
                None => Vec::new(),
            };
            if !list.iter().any(|r| r == repository) {
                list.push(repository.to_owned());
                // A blob pushed to many repositories needs only a few names.
                if list.len() > 16 {
                    list.remove(0);
                }
                t.insert(key.as_str(), to_json(&list)?.as_str())?;
            }
            Ok(())
        })
    }

    /// Repositories (`registry/path`) known to hold blob `d`.
    pub fn blob_sources(&self, d: &Digest) -> Result<Vec<String>> {
        let key = d.to_string();
        self.read(|txn| {
            let t = txn.open_table(BLOB_SOURCES)?;
            match t.get(key.as_str())? {
                Some(v) => Ok(from_json("blob_sources", &key, v.value())?),
                None => Ok(Vec::new()),
            }
        })
    }

    // ---- layers re-encoded for exports ----

    /// The blob of layer `diff_id` encoded as `encoding`, if an earlier
    /// export made it and it is still stored.
    pub fn layer_encoding(
        &self,
        diff_id: &Digest,
        encoding: strata_oci::Compression,
    ) -> Result<Option<EncodedLayer>> {
        let key = encoding_key(diff_id, encoding);
        let rec: Option<EncodedLayer> = self.read(|txn| {
            let t = txn.open_table(LAYER_ENCODINGS)?;
            match t.get(key.as_str())? {
                Some(v) => Ok(Some(from_json("layer_encodings", &key, v.value())?)),
                None => Ok(None),
            }
        })?;
        Ok(rec.filter(|r| self.has_blob(&r.blob)))
    }

    /// Remembers a re-encoded layer whose blob is already stored. It lives
    /// as long as the layer does: GC drops it with the last image or cache
    /// record that needs `diff_id`.
    pub fn put_layer_encoding(
        &self,
        _lock: &WriteLock,
        encoding: strata_oci::Compression,
        rec: &EncodedLayer,
    ) -> Result<()> {
        if !self.has_blob(&rec.blob) {
            return Err(StoreError::MissingBlob { digest: rec.blob });
        }
        let key = encoding_key(&rec.diff_id, encoding);
        let v = to_json(rec)?;
        self.write(|txn| {
            txn.open_table(LAYER_ENCODINGS)?
                .insert(key.as_str(), v.as_str())?;
            Ok(())
        })
    }

    // ---- build cache and context metadata ----

    pub fn cache_get(&self, key: &str) -> Result<Option<CacheRecord>> {
        self.read(|txn| {
            let t = txn.open_table(CACHE)?;
            match t.get(key)? {
                Some(v) => Ok(Some(from_json("build_cache", key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Stores a cache record; the blobs it pins must already be stored.
    pub fn cache_put(&self, _lock: &WriteLock, key: &str, rec: &CacheRecord) -> Result<()> {
        for b in &rec.blobs {
            if !self.has_blob(b) {
                return Err(StoreError::MissingBlob { digest: *b });
            }
        }
        let v = to_json(rec)?;
        self.write(|txn| {
            txn.open_table(CACHE)?.insert(key, v.as_str())?;
            Ok(())
        })
    }

    /// Removes a cache record (GC frees what it alone pinned).
    /// Marks records as used now (one transaction for a build's hits).
    pub fn cache_touch(&self, _lock: &WriteLock, keys: &[String], now: i64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut t = txn.open_table(CACHE)?;
            for k in keys {
                let rec = match t.get(k.as_str())? {
                    Some(v) => Some(from_json::<CacheRecord>("build_cache", k, v.value())?),
                    None => None,
                };
                if let Some(mut rec) = rec {
                    rec.last_used = now;
                    t.insert(k.as_str(), to_json(&rec)?.as_str())?;
                }
            }
            Ok(())
        })
    }

    pub fn cache_remove(&self, _lock: &WriteLock, key: &str) -> Result<bool> {
        self.write(|txn| Ok(txn.open_table(CACHE)?.remove(key)?.is_some()))
    }

    pub fn cache_list(&self) -> Result<Vec<(String, CacheRecord)>> {
        self.read(|txn| {
            let t = txn.open_table(CACHE)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                out.push((
                    k.value().to_owned(),
                    from_json("build_cache", k.value(), v.value())?,
                ));
            }
            Ok(out)
        })
    }

    pub fn ctx_meta_get(&self, key: &str) -> Result<Option<CtxMeta>> {
        self.read(|txn| {
            let t = txn.open_table(CTX_META)?;
            match t.get(key)? {
                Some(v) => Ok(Some(from_json("context_meta", key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Every entry whose key (an absolute path) starts with `prefix`.
    pub fn ctx_meta_prefix(&self, prefix: &str) -> Result<HashMap<String, CtxMeta>> {
        self.read(|txn| {
            let t = txn.open_table(CTX_META)?;
            let mut out = HashMap::new();
            for e in t.range(prefix..)? {
                let (k, v) = e?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.insert(
                    k.value().to_owned(),
                    from_json("context_meta", k.value(), v.value())?,
                );
            }
            Ok(out)
        })
    }

    /// Writes many entries in one transaction (metadata only: no lock needed).
    pub fn ctx_meta_put_batch(&self, entries: &[(String, CtxMeta)]) -> Result<()> {
        self.write(|txn| {
            let mut t = txn.open_table(CTX_META)?;
            for (k, m) in entries {
                t.insert(k.as_str(), to_json(m)?.as_str())?;
            }
            Ok(())
        })
    }

    // ---- snapshots ----

    /// Directory where the unpacked tree of a layer lives.
    pub fn snapshot_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("snapshots").join(diff_id.hex())
    }

    /// Records that the snapshot of `diff_id` is complete (after unpacking it
    /// into [`Store::snapshot_dir`]).
    pub fn snapshot_done(&self, _lock: &WriteLock, diff_id: &Digest) -> Result<()> {
        self.write(|txn| {
            txn.open_table(SNAPSHOTS)?
                .insert(diff_id.to_string().as_str(), "complete")?;
            Ok(())
        })
    }

    pub fn snapshot_ready(&self, diff_id: &Digest) -> Result<bool> {
        self.read(|txn| {
            Ok(txn
                .open_table(SNAPSHOTS)?
                .get(diff_id.to_string().as_str())?
                .is_some())
        })
    }

    // ---- GC and check ----

    /// Everything some record refers to: (blobs, layer diffIDs).
    fn live_set(&self) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        self.read(|txn| {
            let mut blobs = BTreeSet::new();
            let mut layers = BTreeSet::new();
            let imgs = txn.open_table(IMAGES)?;
            for i in all_images(&imgs)? {
                blobs.insert(i.id);
                blobs.insert(i.manifest);
                for l in &i.layers {
                    blobs.insert(l.blob);
                    layers.insert(l.diff_id);
                }
            }
            let cache = txn.open_table(CACHE)?;
            for e in cache.iter()? {
                let (k, v) = e?;
                let r: CacheRecord = from_json("build_cache", k.value(), v.value())?;
                blobs.extend(r.blobs);
                layers.extend(r.diff_ids);
            }
            let lt = txn.open_table(LAYERS)?;
            for e in lt.iter()? {
                let (k, v) = e?;
                let l: LayerRecord = from_json("layers", k.value(), v.value())?;
                if layers.contains(&l.diff_id) {
                    blobs.insert(l.blob);
                }
            }
            let enc = txn.open_table(LAYER_ENCODINGS)?;
            for e in enc.iter()? {
                let (k, v) = e?;
                let r: EncodedLayer = from_json("layer_encodings", k.value(), v.value())?;
                if layers.contains(&r.diff_id) {
                    blobs.insert(r.blob);
                }
            }
            Ok((blobs, layers))
        })
    }

    /// Frees exactly what no image, container or cache record refers to:
    /// layer records, blobs, snapshots and leftover temporary files.
    pub fn gc(&self, _lock: &WriteLock) -> Result<GcReport> {
        self.write(|txn| prune_layer_table(txn, &self.root).map(|_| ()))?;
        let (live_blobs, live_layers) = self.live_set()?;
        let mut report = GcReport::default();
        for (d, size) in blobs::list(&self.root)? {
            if !live_blobs.contains(&d) {
                blobs::delete(&self.root, &d)?;
                report.blobs_removed.push(d);
                report.bytes_freed += size;
            }
        }
        let containers = self.containers()?;
        let live_upper: BTreeSet<String> = containers.iter().map(|c| c.id.clone()).collect();
        let snaps = self.root.join("snapshots");
        let mut dead_snaps = Vec::new();
        for e in fs_err::read_dir(&snaps).map_err(io_err(&snaps))? {
            let e = e.map_err(io_err(&snaps))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let live = Digest::from_hex(&name)
                .map(|d| live_layers.contains(&d))
                .unwrap_or(false);
            if !live {
                dead_snaps.push(name);
                remove_any(&e.path())?;
                report.snapshots_removed += 1;
            }
        }
        if !dead_snaps.is_empty() {
            self.write(|txn| {
                let mut t = txn.open_table(SNAPSHOTS)?;
                for s in &dead_snaps {
                    if let Ok(d) = Digest::from_hex(s) {
                        t.remove(d.to_string().as_str())?;
                    }
                }
                Ok(())
            })?;
        }
        let cdir = self.root.join("containers");
        for e in fs_err::read_dir(&cdir).map_err(io_err(&cdir))? {
            let e = e.map_err(io_err(&cdir))?;
            if !live_upper.contains(e.file_name().to_string_lossy().as_ref()) {
                remove_any(&e.path())?;
            }
        }
        // Temporary files are only ever written under the lock we hold, so
        // any left here belong to an interrupted writer.
        report.temp_files_removed += blobs::sweep_temp(&self.root)?;
        let tmp = self.root.join("tmp");
        for e in fs_err::read_dir(&tmp).map_err(io_err(&tmp))? {
            let e = e.map_err(io_err(&tmp))?;
            remove_any(&e.path())?;
            report.temp_files_removed += 1;
        }
        Ok(report)
    }

    /// Verifies every blob's digest and every reference. With `repair`,
    /// removes what is broken (corrupt blobs, images missing blobs, tags and
    /// containers pointing at missing images) and runs GC.
    pub fn check(&self, lock: &WriteLock, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut bad_blobs = BTreeSet::new();
        for (d, _) in blobs::list(&self.root)? {
            report.blobs_checked += 1;
            match blobs::verify(&self.root, &d) {
                Ok(()) => {}
                Err(StoreError::DigestMismatch { actual, .. }) => {
                    report.problems.push(Problem {
                        what: format!("blob {d}: content has digest {actual}"),
                        repaired: repair,
                    });
                    bad_blobs.insert(d);
                }
                Err(e) => return Err(e),
            }
        }
        if repair {
            for d in &bad_blobs {
                blobs::delete(&self.root, d)?;
            }
        }
        let images = self.images()?;
        let mut broken_images = BTreeSet::new();
        for (img, _) in &images {
            report.images_checked += 1;
            let mut need = vec![
                (img.id, "config".to_owned()),
                (img.manifest, "manifest".to_owned()),
            ];
            need.extend(
                img.layers
                    .iter()
                    .map(|l| (l.blob, format!("layer {}", l.diff_id))),
            );
            for (d, what) in need {
                if !self.has_blob(&d) || bad_blobs.contains(&d) {
                    report.problems.push(Problem {
                        what: format!(
                            "image {}: {what} blob {d} is missing or corrupt",
                            img.id.short()
                        ),
                        repaired: repair,
                    });
                    broken_images.insert(img.id);
                }
            }
            if let Some(p) = img.parent
                && !images.iter().any(|(i, _)| i.id == p)
            {
                // Harmless (Docker keeps no parent either after a load), but
                // worth knowing; repaired by dropping the link.
                report.problems.push(Problem {
                    what: format!(
                        "image {}: parent {} is not in the store",
                        img.id.short(),
                        p.short()
                    ),
                    repaired: repair,
                });
            }
        }
        let ids: BTreeSet<Digest> = images.iter().map(|(i, _)| i.id).collect();
        let tags = self.tags()?;
        let bad_tags: Vec<String> = tags
            .iter()
            .filter(|(_, id)| !ids.contains(id))
            .map(|(t, _)| t.clone())
            .collect();
        for t in &bad_tags {
            report.problems.push(Problem {
                what: format!("tag {} points at a missing image", familiar(t)),
                repaired: repair,
            });
        }
        let containers = self.containers()?;
        let bad_containers: Vec<String> = containers
            .iter()
            .filter(|c| !ids.contains(&c.image))
            .map(|c| c.id.clone())
            .collect();
        for c in &bad_containers {
            report.problems.push(Problem {
                what: format!("container {} uses a missing image", short12(c)),
                repaired: repair,
            });
        }
        let (live, _) = self.live_set()?;
        report.unreferenced_blobs = blobs::list(&self.root)?
            .iter()
            .filter(|(d, _)| !live.contains(d))
            .count();
        if repair {
            self.write(|txn| {
                let mut imgs = txn.open_table(IMAGES)?;
                let mut tagt = txn.open_table(TAGS)?;
                let mut ct = txn.open_table(CONTAINERS)?;
                for id in &broken_images {
                    imgs.remove(id.to_string().as_str())?;
                }
                let broken: Vec<String> = broken_images.iter().map(|d| d.to_string()).collect();
                let mut drop_tags = bad_tags.clone();
                for e in tagt.iter()? {
                    let (k, v) = e?;
                    if broken.iter().any(|b| b == v.value()) {
                        drop_tags.push(k.value().to_owned());
                    }
                }
                for t in &drop_tags {
                    tagt.remove(t.as_str())?;
                }
                for c in &bad_containers {
                    ct.remove(c.as_str())?;
                }
                let mut fix = Vec::new();
                for i in all_images(&imgs)? {
                    if let Some(p) = i.parent
                        && imgs.get(p.to_string().as_str())?.is_none()
                    {
                        fix.push(ImageRecord { parent: None, ..i });
                    }
                }
                for i in fix {
                    imgs.insert(i.id.to_string().as_str(), to_json(&i)?.as_str())?;
                }
                Ok(())
            })?;
            report.gc = Some(self.gc(lock)?);
        }
        Ok(report)
    }

    /// Bytes the blobs take on disk, counting each once.
    pub fn blob_sizes(&self) -> Result<BTreeMap<Digest, u64>> {
        Ok(blobs::list(&self.root)?.into_iter().collect())
    }
}

/// An error inside a transaction closure: the database's or ours.
pub(crate) enum TxnError {
    Db(redb::Error),
    Store(StoreError),
}

impl<E: Into<redb::Error>> From<E> for TxnError {
    fn from(e: E) -> Self {
        TxnError::Db(e.into())
    }
}

impl From<StoreError> for TxnError {
    fn from(e: StoreError) -> Self {
        TxnError::Store(e)
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<String> {
    // Serialising our own plain records cannot fail; map it anyway rather
    // than panic.
    serde_json::to_string(v).map_err(|e| StoreError::Record {
        table: "(serialise)",
        key: String::new(),
        source: e,
    })
}

fn from_json<T: for<'a> Deserialize<'a>>(
    table: &'static str,
    key: &str,
    v: &str,
) -> Result<T, TxnError> {
    serde_json::from_str(v).map_err(|e| {
        StoreError::Record {
            table,
            key: key.to_owned(),
            source: e,
        }
        .into()
    })
}

fn parse_digest(table: &'static str, key: &str, v: &str) -> Result<Digest, TxnError> {
    v.parse::<Digest>().map_err(|_| {
        StoreError::Conflict(format!(
            "table {table}: record {key} holds an invalid digest {v}"
        ))
        .into()
    })
}

fn all_images(
    t: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<ImageRecord>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        out.push(from_json("images", k.value(), v.value())?);
    }
    Ok(out)
}

fn collect_tags(
    t: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
) -> Result<Vec<String>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        if v.value() == id {
            out.push(k.value().to_owned());
        }
    }
    Ok(out)
}

fn container_users(
    t: &impl ReadableTable<&'static str, &'static str>,
    id: &Digest,
) -> Result<Vec<String>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        let c: ContainerRecord = from_json("containers", k.value(), v.value())?;
        if c.image == *id {
            out.push(c.id);
        }
    }
    Ok(out)
}

fn encoding_key(diff_id: &Digest, encoding: strata_oci::Compression) -> String {
    match encoding {
        strata_oci::Compression::Gzip { level } => format!("{diff_id} gzip-{level}"),
        strata_oci::Compression::Zstd { level } => format!("{diff_id} zstd-{level}"),
        strata_oci::Compression::Uncompressed => format!("{diff_id} uncompressed"),
    }
}

fn blob_exists(root: &Path, d: &Digest) -> bool {
    blobs::path(root, d).is_file()
}

/// Removes layer records no image or cache record needs, and the
/// re-encodings of those layers; returns their diffIDs.
fn prune_layer_table(
    txn: &redb::WriteTransaction,
    root: &Path,
) -> Result<BTreeSet<Digest>, TxnError> {
    let imgs = txn.open_table(IMAGES)?;
    let mut live: BTreeSet<Digest> = BTreeSet::new();
    for i in all_images(&imgs)? {
        live.extend(i.layers.iter().map(|l| l.diff_id));
    }
    let cache = txn.open_table(CACHE)?;
    for e in cache.iter()? {
        let (k, v) = e?;
        let r: CacheRecord = from_json("build_cache", k.value(), v.value())?;
        live.extend(r.diff_ids);
    }
    let mut layers = txn.open_table(LAYERS)?;
    let mut dead = BTreeSet::new();
    for e in layers.iter()? {
        let (k, v) = e?;
        let d = parse_digest("layers", k.value(), k.value())?;
        let _ = v;
        if !live.contains(&d) {
            dead.insert(d);
        }
    }
    for d in &dead {
        layers.remove(d.to_string().as_str())?;
    }
    // Re-encodings of layers nothing needs any more, and those whose blob is
    // gone (`check --repair` removed it as corrupt), go with them.
    let mut enc = txn.open_table(LAYER_ENCODINGS)?;
    let mut stale = Vec::new();
    for e in enc.iter()? {
        let (k, v) = e?;
        let r: EncodedLayer = from_json("layer_encodings", k.value(), v.value())?;
        if !live.contains(&r.diff_id) || !blob_exists(root, &r.blob) {
            stale.push(k.value().to_owned());
        }
    }
    for k in &stale {
        enc.remove(k.as_str())?;
    }
    Ok(dead)
}

fn resolve_in(images: &[(ImageRecord, Vec<String>)], name: &str) -> Result<Option<ImageRecord>> {
    let bare = name.strip_prefix("sha256:").unwrap_or(name);
    if let Ok(d) = Digest::from_hex(bare)
        && let Some((i, _)) = images.iter().find(|(i, _)| i.id == d)
    {
        return Ok(Some(i.clone()));
    }
    if let Some((_, dg)) = name.split_once('@') {
        let d: Digest = dg
            .parse()
            .map_err(|_| StoreError::InvalidReference(format!("{name}: invalid digest")))?;
        let pinned = normalize_reference(name).ok();
        return Ok(images
            .iter()
            .find(|(i, _)| {
                i.manifest == d || pinned.as_ref().is_some_and(|p| i.repo_digests.contains(p))
            })
            .map(|(i, _)| i.clone()));
    }
    if let Ok(n) = normalize_reference(name)
        && let Some((i, _)) = images.iter().find(|(_, t)| t.contains(&n))
    {
        return Ok(Some(i.clone()));
    }
    // Docker accepts any unique hex prefix of the ID.
    if !bare.is_empty()
        && bare.len() < 64
        && bare
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        let m: Vec<_> = images
            .iter()
            .filter(|(i, _)| i.id.hex().starts_with(bare))
            .collect();
        return match m.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.0.clone())),
            _ => Err(StoreError::Conflict(format!(
                "multiple IDs found with provided prefix: {bare}"
            ))),
        };
    }
    Ok(None)
}

/// Whether `name` named the image by a tag (rather than by ID or digest).
fn is_by_name(images: &[(ImageRecord, Vec<String>)], name: &str) -> bool {
    if name.contains('@') {
        return false;
    }
    match normalize_reference(name) {
        Ok(n) => images.iter().any(|(_, t)| t.contains(&n)),
        Err(_) => false,
    }
}

fn short12(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

fn remove_any(p: &Path) -> Result<()> {
    let meta = fs_err::symlink_metadata(p).map_err(io_err(p))?;
    if meta.is_dir() {
        fs_err::remove_dir_all(p).map_err(io_err(p))
    } else {
        fs_err::remove_file(p).map_err(io_err(p))
    }
}

fn is_root() -> bool {
    // /proc/self/status carries the effective UID without needing libc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The current time in seconds since the epoch.
pub fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Formats seconds since the epoch as RFC 3339 (as image configs carry it).
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 time to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}
