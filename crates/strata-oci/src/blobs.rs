//! A content-addressed blob store over a directory laid out `<dir>/sha256/<hex>`
//! (the layout of an OCI image layout's `blobs/` folder, so the same code
//! writes the local store and OCI layouts).
//!
//! Writes stream through a hasher into a temporary file in the same directory,
//! are fsynced and renamed into place ([`crate::atomic`]), so a blob is either
//! absent or complete. Reads re-hash what they return and fail at EOF when the
//! content does not match its name: a corrupt blob is never silently used.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::atomic::AtomicFile;
use crate::digest::{Digest, DigestingWriter};
use crate::io_error::IoError;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("blob {digest} not found in {}", dir.display())]
    NotFound { digest: Digest, dir: PathBuf },
    #[error("blob {expected} is corrupt: its content hashes to {actual} ({})", path.display())]
    Corrupt {
        expected: Digest,
        actual: Digest,
        path: PathBuf,
    },
    #[error("content written as {expected} hashes to {actual}; nothing was stored")]
    Mismatch { expected: Digest, actual: Digest },
    #[error("a blob written without hashing needs the digest its writer computed")]
    NoDigestGiven,
    #[error("a blob writer can take its digest from the caller only before any byte is written")]
    DigestGivenLate,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BlobError + 'a {
    move |source| BlobError::Io(IoError::at(op, path)(source))
}

/// A directory of blobs named by their sha256.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    /// Blobs are handed to users (an exported OCI layout): written with the
    /// umask's mode rather than privately.
    shared: bool,
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `dir`; blobs live in `dir/sha256/`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let dir = dir.into();
        let sub = dir.join(Digest::ALGORITHM);
        fs_err::create_dir_all(&sub).map_err(io_err("creating blob directory", &sub))?;
        Ok(Self { dir, shared: false })
    }

    /// Like [`BlobStore::open`], for a layout handed to users: blobs get the
    /// mode a plain `open(2)` would give (0666 minus the umask).
    pub fn open_shared(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let mut s = Self::open(dir)?;
        s.shared = true;
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.dir
    }

    /// Where the blob is (or would be) stored.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(Digest::ALGORITHM).join(digest.hex())
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size in bytes of a stored blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        let p = self.path(digest);
        match std::fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                digest: *digest,
                dir: self.dir.clone(),
            }),
            Err(e) => Err(BlobError::Io(IoError::at("reading metadata of", p)(e))),
        }
    }

    /// Starts writing a blob whose digest is known only at the end.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let sub = self.dir.join(Digest::ALGORITHM);
        // The target name is unknown until commit; the temp file lives in the
        // same directory so the final rename is atomic.
        let placeholder = sub.join("incoming");
        let file = if self.shared {
            AtomicFile::create_shared(&placeholder)
        } else {
            AtomicFile::create(&placeholder)
        }
        .map_err(io_err("creating a temporary blob in", &sub))?;
        Ok(BlobWriter {
            inner: BlobBytes::Hashed(DigestingWriter::new(file)),
            store: self.clone(),
        })
    }

    /// Stores everything `r` yields.
    pub fn put_reader(&self, mut r: impl Read) -> Result<(Digest, u64), BlobError> {
        let mut w = self.writer()?;
        io::copy(&mut r, &mut w).map_err(io_err("writing a blob into", &self.dir))?;
        w.commit(None)
    }

    pub fn put_bytes(&self, data: &[u8]) -> Result<(Digest, u64), BlobError> {
        let digest = Digest::of(data);
        if self.contains(&digest) {
            return Ok((digest, data.len() as u64));
        }
        let mut w = self.writer()?;
        w.write_all(data)
            .map_err(io_err("writing a blob into", &self.dir))?;
        w.commit(Some(digest))
    }

    /// Opens a blob for reading; the reader fails at EOF if the content does
    /// not hash to `digest`.
    pub fn open_verified(&self, digest: &Digest) -> Result<VerifiedReader, BlobError> {
        let path = self.path(digest);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound {
                    digest: *digest,
                    dir: self.dir.clone(),
                });
            }
            Err(e) => {
                return Err(BlobError::Io(IoError::at("opening blob", path)(e)));
            }
        };
        Ok(VerifiedReader {
            inner: Some(crate::digest::DigestingReader::new(file)),
            expected: *digest,
            path,
        })
    }

    pub fn read_verified(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let mut r = self.open_verified(digest)?;
        let mut buf = Vec::new();
        match r.read_to_end(&mut buf) {
            Ok(_) => Ok(buf),
            Err(e) => Err(r.take_error(e)),
        }
    }

    /// Re-hashes a stored blob.
    pub fn verify(&self, digest: &Digest) -> Result<(), BlobError> {
        // Read in 1 MiB pieces rather than io::copy's 8 KiB.
        let mut r = io::BufReader::with_capacity(1 << 20, self.open_verified(digest)?);
        match io::copy(&mut r, &mut io::sink()) {
            Ok(_) => Ok(()),
            Err(e) => Err(r.get_ref().take_error(e)),
        }
    }

    pub fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        let p = self.path(digest);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BlobError::Io(IoError::at("deleting blob", p)(e))),
        }
    }

    /// Every stored blob, sorted. Temporary files and foreign names are ignored.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let sub = self.dir.join(Digest::ALGORITHM);
        let mut out = Vec::new();
        for entry in fs_err::read_dir(&sub).map_err(io_err("listing", &sub))? {
            let entry = entry.map_err(io_err("listing", &sub))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// A blob being written; nothing is visible until [`BlobWriter::commit`].
pub struct BlobWriter {
    inner: BlobBytes,
    store: BlobStore,
}

/// The bytes of a [`BlobWriter`]: hashed as they pass, or only counted when
/// the caller gives the digest ([`BlobWriter::digest_given`]).
enum BlobBytes {
    Hashed(DigestingWriter<AtomicFile>),
    DigestGiven { file: AtomicFile, len: u64 },
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        match &self.inner {
            BlobBytes::Hashed(w) => w.len(),
            BlobBytes::DigestGiven { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// For a writer whose bytes the caller hashes in the same pass that
    /// writes them (a layer's tar, whose diffID is its plain blob's digest):
    /// the bytes are not hashed a second time here, and
    /// [`BlobWriter::commit`] takes the caller's digest as the blob's, so
    /// it must be given one. Call before writing anything.
    pub fn digest_given(self) -> Result<Self, BlobError> {
        match self.inner {
            BlobBytes::Hashed(w) if w.is_empty() => {
                let (file, _, _) = w.finish();
                Ok(Self {
                    inner: BlobBytes::DigestGiven { file, len: 0 },
                    store: self.store,
                })
            }
            _ => Err(BlobError::DigestGivenLate),
        }
    }

    /// Finishes the blob. With `expected`, a different digest is refused and
    /// nothing is stored; a writer made [`BlobWriter::digest_given`] needs
    /// it. An already stored blob is left as it is.
    pub fn commit(self, expected: Option<Digest>) -> Result<(Digest, u64), BlobError> {
        let (file, digest, len) = match self.inner {
            BlobBytes::Hashed(w) => {
                let (file, digest, len) = w.finish();
                if let Some(expected) = expected
                    && expected != digest
                {
                    return Err(BlobError::Mismatch {
                        expected,
                        actual: digest,
                    });
                }
                (file, digest, len)
            }
            BlobBytes::DigestGiven { file, len } => {
                let Some(digest) = expected else {
                    return Err(BlobError::NoDigestGiven);
                };
                (file, digest, len)
            }
        };
        let target = self.store.path(&digest);
        if target.is_file() {
            // Same name, same content: keep the existing file (dropping the
            // temp file removes it).
            return Ok((digest, len));
        }
        file.commit_to(&target)
            .map_err(io_err("storing blob", &target))?;
        Ok((digest, len))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            BlobBytes::Hashed(w) => w.write(buf),
            BlobBytes::DigestGiven { file, len } => {
                let n = file.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            BlobBytes::Hashed(w) => w.flush(),
            BlobBytes::DigestGiven { file, .. } => file.flush(),
        }
    }
}

/// Reads a blob and fails at EOF if it does not hash to its name.
pub struct VerifiedReader {
    inner: Option<crate::digest::DigestingReader<std::fs::File>>,
    expected: Digest,
    path: PathBuf,
}

impl VerifiedReader {
    /// Turns an I/O error from this reader back into the typed error it carries.
    pub fn take_error(&self, e: io::Error) -> BlobError {
        match e.get_ref().and_then(|i| i.downcast_ref::<CorruptMarker>()) {
            Some(m) => BlobError::Corrupt {
                expected: self.expected,
                actual: m.0,
                path: self.path.clone(),
            },
            None => BlobError::Io(IoError::at("reading blob", self.path.clone())(e)),
        }
    }
}

#[derive(Debug)]
struct CorruptMarker(Digest, String);

impl std::fmt::Display for CorruptMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for CorruptMarker {}

impl Read for VerifiedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(inner) = self.inner.as_mut() else {
            return Ok(0);
        };
        let n = inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let Some(inner) = self.inner.take() else {
                return Ok(0);
            };
            let (_, actual, _) = inner.finish();
            if actual != self.expected {
                let msg = format!(
                    "blob {} is corrupt: its content hashes to {actual} ({})",
                    self.expected,
                    self.path.display()
                );
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    CorruptMarker(actual, msg),
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (d, n) = store.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(n, 5);
        assert!(store.contains(&d));
        assert_eq!(store.size(&d).unwrap(), 5);
        assert_eq!(store.read_verified(&d).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![d]);
        let (d2, _) = store.put_reader(&b"hello"[..]).unwrap();
        assert_eq!(d2, d);
        assert!(store.delete(&d).unwrap());
        assert!(!store.contains(&d));
        assert!(matches!(
            store.read_verified(&d),
            Err(BlobError::NotFound { .. })
        ));
    }

    #[test]
    fn corrupt_blob_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (d, _) = store.put_bytes(b"good content").unwrap();
        std::fs::write(store.path(&d), b"evil content").unwrap();
        let err = store.read_verified(&d).unwrap_err();
        assert!(
            matches!(err, BlobError::Corrupt { expected, .. } if expected == d),
            "{err}"
        );
        assert!(err.to_string().contains(&d.hex()));
        assert!(store.verify(&d).is_err());
    }

    #[test]
    fn mismatched_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let err = w.commit(Some(Digest::of(b"xyz"))).unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }));
        assert_eq!(
            std::fs::read_dir(dir.path().join("sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn a_writer_given_its_digest_stores_under_it_and_needs_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap().digest_given().unwrap();
        w.write_all(b"layer").unwrap();
        assert_eq!(w.len(), 5);
        let (d, n) = w.commit(Some(Digest::of(b"layer"))).unwrap();
        assert_eq!((d, n), (Digest::of(b"layer"), 5));
        assert_eq!(store.read_verified(&d).unwrap(), b"layer");

        let mut w = store.writer().unwrap().digest_given().unwrap();
        w.write_all(b"other").unwrap();
        assert!(matches!(w.commit(None), Err(BlobError::NoDigestGiven)));
        // Too late once bytes went through the hashing writer.
        let mut w = store.writer().unwrap();
        w.write_all(b"x").unwrap();
        assert!(matches!(w.digest_given(), Err(BlobError::DigestGivenLate)));
        assert_eq!(store.list().unwrap(), vec![d]);
    }
}
