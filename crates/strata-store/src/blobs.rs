//! The content store, `root/blobs/sha256/<hex>`, through strata-oci's
//! [`BlobStore`] (hash while streaming, temp file + fsync + rename), mapped
//! to the store's errors. GC also sweeps the temporary files an interrupted
//! writer leaves beside the blobs.

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_oci::blobs::{BlobError, BlobStore};

use redb::ReadableTable;

use crate::db::*;
use crate::{ImageRecord, LayerRecord, Lease, Result, Store, StoreError, WriteLock, io_err};

/// The store's blob directory as strata-oci's [`BlobStore`].
pub(crate) fn blob_store(root: &Path) -> Result<BlobStore> {
    BlobStore::open(root.join("blobs")).map_err(map)
}

pub(crate) fn map(e: BlobError) -> StoreError {
    match e {
        BlobError::NotFound { digest, .. } => StoreError::MissingBlob { digest },
        BlobError::Corrupt {
            expected, actual, ..
        }
        | BlobError::Mismatch { expected, actual } => {
            StoreError::DigestMismatch { expected, actual }
        }
        other => StoreError::Blob(other),
    }
}

pub(crate) fn path(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(d.hex())
}

pub(crate) fn put_reader(root: &Path, reader: impl Read) -> Result<(Digest, u64)> {
    blob_store(root)?.put_reader(reader).map_err(map)
}

pub(crate) fn read_verified(root: &Path, d: &Digest) -> Result<Vec<u8>> {
    blob_store(root)?.read_verified(d).map_err(map)
}

pub(crate) fn verify(root: &Path, d: &Digest) -> Result<()> {
    blob_store(root)?.verify(d).map_err(map)
}

/// Every blob with its size.
pub(crate) fn list(root: &Path) -> Result<Vec<(Digest, u64)>> {
    let s = blob_store(root)?;
    let mut out = Vec::new();
    for d in s.list().map_err(map)? {
        match s.size(&d) {
            Ok(n) => out.push((d, n)),
            // Deleted meanwhile by nobody (we hold the lock) or a race with a
            // reader-only caller: just not there any more.
            Err(BlobError::NotFound { .. }) => {}
            Err(e) => return Err(map(e)),
        }
    }
    Ok(out)
}

pub(crate) fn delete(root: &Path, d: &Digest) -> Result<()> {
    blob_store(root)?.delete(d).map(|_| ()).map_err(map)
}

/// Removes temporary files left in the blob directory by writers that died
/// mid-write (anything whose name is not a digest). Only under the lock.
pub(crate) fn sweep_temp(root: &Path) -> Result<usize> {
    let dir = root.join("blobs/sha256");
    let mut n = 0;
    for e in fs_err::read_dir(&dir).map_err(io_err(&dir))? {
        let e = e.map_err(io_err(&dir))?;
        if Digest::from_hex(&e.file_name().to_string_lossy()).is_err() {
            let p = e.path();
            fs_err::remove_file(&p).map_err(io_err(&p))?;
            n += 1;
        }
    }
    Ok(n)
}

impl Store {
    /// Path of a blob (it may not exist).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        path(&self.root, d)
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
        put_reader(&self.root, reader)
    }

    /// Starts a blob whose digest is known only when it is written (a
    /// layer being compressed); nothing is visible before
    /// [`Store::commit_blob`]. Written without the store lock: the caller's
    /// live lease is what keeps GC from sweeping the temp file.
    pub fn blob_writer(&self, _lease: &Lease) -> Result<strata_oci::blobs::BlobWriter> {
        blob_store(&self.root)?.writer().map_err(map)
    }

    /// A [`Store::blob_writer`] that does not hash what it stores: for a
    /// layer tar whose writer computes its diffID (the plain blob's digest)
    /// over exactly these bytes, passed to [`Store::commit_blob`].
    pub fn blob_writer_digest_given(&self, lease: &Lease) -> Result<strata_oci::blobs::BlobWriter> {
        self.blob_writer(lease)?.digest_given().map_err(map)
    }

    /// Finishes a [`Store::blob_writer`] blob and adds it to `lease`, under
    /// the store lock, so GC sees the blob only once the lease names it;
    /// with `expected`, a different digest is refused and nothing is stored.
    pub fn commit_blob(
        &self,
        lock: &WriteLock,
        lease: &Lease,
        w: strata_oci::blobs::BlobWriter,
        expected: Option<Digest>,
    ) -> Result<(Digest, u64)> {
        let (digest, size) = w.commit(expected).map_err(map)?;
        lease.add(lock, [digest])?;
        Ok((digest, size))
    }

    pub fn put_blob_bytes(&self, _lock: &WriteLock, data: &[u8]) -> Result<Digest> {
        put_reader(&self.root, data).map(|(d, _)| d)
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>> {
        read_verified(&self.root, d)
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
        let (_, tar) =
            strata_oci::compress::decompress(self.open_blob(&l.blob)?).map_err(io_err(&p))?;
        Ok(tar)
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
}

impl Store {
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
}
