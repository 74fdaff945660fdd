//! The content store, `root/blobs/sha256/<hex>`, through strata-oci's
//! [`BlobStore`] (hash while streaming, temp file + fsync + rename), mapped
//! to the store's errors. GC also sweeps the temporary files an interrupted
//! writer leaves beside the blobs.

use std::io::Read;
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_oci::blobs::{BlobError, BlobStore};

use crate::{Result, StoreError, io_err};

fn store(root: &Path) -> Result<BlobStore> {
    BlobStore::open(root.join("blobs")).map_err(map)
}

fn map(e: BlobError) -> StoreError {
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
    store(root)?.put_reader(reader).map_err(map)
}

pub(crate) fn read_verified(root: &Path, d: &Digest) -> Result<Vec<u8>> {
    store(root)?.read_verified(d).map_err(map)
}

pub(crate) fn verify(root: &Path, d: &Digest) -> Result<()> {
    store(root)?.verify(d).map_err(map)
}

/// Every blob with its size.
pub(crate) fn list(root: &Path) -> Result<Vec<(Digest, u64)>> {
    let s = store(root)?;
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
    store(root)?.delete(d).map(|_| ()).map_err(map)
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
