//! The metadata database: its tables, opening the store, the writer lock,
//! and read/write transactions (retrying while another process has the
//! database open), with the JSON encoding every record is stored in.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use strata_oci::Digest;

use crate::*;

pub(crate) const IMAGES: TableDefinition<&str, &str> = TableDefinition::new("images");
pub(crate) const TAGS: TableDefinition<&str, &str> = TableDefinition::new("tags");
pub(crate) const LAYERS: TableDefinition<&str, &str> = TableDefinition::new("layers");
pub(crate) const SNAPSHOTS: TableDefinition<&str, &str> = TableDefinition::new("snapshots");
pub(crate) const CONTAINERS: TableDefinition<&str, &str> = TableDefinition::new("containers");
pub(crate) const CACHE: TableDefinition<&str, &str> = TableDefinition::new("build_cache");
pub(crate) const CTX_META: TableDefinition<&str, &str> = TableDefinition::new("context_meta");
/// Blob digest -> JSON list of `registry/repository` known to hold it (from
/// pulls and pushes), for cross-repository mounts on push.
pub(crate) const BLOB_SOURCES: TableDefinition<&str, &str> = TableDefinition::new("blob_sources");
/// `<diffID> <encoding>` (`zstd-9`, `uncompressed`) -> JSON [`EncodedLayer`]:
/// a layer re-encoded for an export, kept so that the next export with the
/// same compression reuses the blob. Live exactly as long as its layer.
pub(crate) const LAYER_ENCODINGS: TableDefinition<&str, &str> =
    TableDefinition::new("layer_encodings");

/// How long an operation waits for another process to release the database.
pub(crate) const DB_WAIT: Duration = Duration::from_secs(300);

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
        if !store.db_path.exists() {
            // Under the writer lock: loose files in `tmp/` are only ever
            // made under it, so a sweep holding it may remove them.
            let _lock = store.lock()?;
            if !store.db_path.exists() {
                store.create_db()?;
            }
        }
        // Create every table once so that readers never meet a missing table
        // (a database made by an older strata may lack the newer ones).
        let db = store.db()?;
        store.write_txn(&db, create_tables)?;
        Ok(store)
    }

    /// Makes the database under a temporary name and renames it into place,
    /// so that a process killed while creating it leaves no half-written
    /// `metadata.redb` (redb refuses a file without its header) for the next
    /// one to trip over. When another process wins the race, its database is
    /// kept and ours discarded.
    fn create_db(&self) -> Result<()> {
        let scratch = self.root.join("tmp");
        let tmp = tempfile::Builder::new()
            .prefix("metadata.redb.")
            .tempfile_in(&scratch)
            .map_err(io_err(&scratch))?;
        {
            let db = Database::create(tmp.path()).map_err(|e| self.db_err(e))?;
            self.write_txn(&db, create_tables)?;
        }
        tmp.as_file().sync_all().map_err(io_err(tmp.path()))?;
        match tmp.persist_noclobber(&self.db_path) {
            Ok(_) => Ok(()),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(io_err(&self.db_path)(e.error)),
        }
    }

    /// The directories whose subdirectories are unrelated trees (scratch
    /// and snapshots), for the executor to mark so (`spread_subdirectories`).
    pub fn tree_parents(&self) -> [PathBuf; 2] {
        [self.root.join("tmp"), self.root.join("snapshots")]
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the store-wide writer lock (blocking until it is free).
    pub fn lock(&self) -> Result<WriteLock> {
        Ok(WriteLock {
            _file: lock_file(&self.root.join("lock"))?,
        })
    }

    pub(crate) fn db(&self) -> Result<Database> {
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

    pub(crate) fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: self.db_path.clone(),
            source: Box::new(e.into()),
        }
    }

    pub(crate) fn write_txn<T>(
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

    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, TxnError>,
    ) -> Result<T> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| self.db_err(e))?;
        f(&txn).map_err(|e| match e {
            TxnError::Db(e) => self.db_err(e),
            TxnError::Store(e) => e,
        })
    }

    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, TxnError>,
    ) -> Result<T> {
        let db = self.db()?;
        self.write_txn(&db, f)
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

pub(crate) fn to_json<T: Serialize>(v: &T) -> Result<String> {
    // Serialising our own plain records cannot fail; map it anyway rather
    // than panic.
    serde_json::to_string(v).map_err(|e| StoreError::Record {
        table: "(serialise)",
        key: String::new(),
        source: e,
    })
}

pub(crate) fn from_json<T: for<'a> Deserialize<'a>>(
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

pub(crate) fn parse_digest(table: &'static str, key: &str, v: &str) -> Result<Digest, TxnError> {
    v.parse::<Digest>().map_err(|_| {
        StoreError::Conflict(format!(
            "table {table}: record {key} holds an invalid digest {v}"
        ))
        .into()
    })
}

pub(crate) fn is_root() -> bool {
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

/// Every image record in the images table.
pub(crate) fn all_images(
    t: &impl ReadableTable<&'static str, &'static str>,
) -> Result<Vec<ImageRecord>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        out.push(from_json("images", k.value(), v.value())?);
    }
    Ok(out)
}

/// The first 12 characters of an ID, as docker prints it.
pub(crate) fn short12(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

fn create_tables(txn: &redb::WriteTransaction) -> Result<(), TxnError> {
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
}

/// Opens (creating) `path` and waits for an exclusive `flock` on it, held
/// until the returned file is dropped: the store lock and per-key locks.
pub(crate) fn lock_file(path: &Path) -> Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    file.lock().map_err(io_err(path))?;
    Ok(file)
}
