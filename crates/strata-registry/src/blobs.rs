//! Blob downloads: small blobs into memory, layers into a file the caller
//! names (resumed with `Range`, verified against the digest), and
//! existence checks.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use reqwest::StatusCode;
use reqwest::header::{self};
use sha2::{Digest as _, Sha256};
use strata_oci::Digest;
use strata_oci::image::Descriptor;

use crate::client::*;
use crate::manifests::*;
use crate::*;

impl Client {
    /// A small blob (a config) read into memory and verified.
    pub fn get_blob_bytes(
        &self,
        repo: &Repository,
        digest: &Digest,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {digest} of {repo}");
        let scopes = Self::pull_scope(repo);
        let resp = self.send(repo, &scopes, &|h, base| {
            h.get(format!("{base}/v2/{}/blobs/{digest}", repo.name))
        })?;
        if !resp.status().is_success() {
            return Err(Self::status_error(repo, &what, resp));
        }
        let bytes = read_limited(resp, limit, &what)?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Downloads a blob into `partial`, resuming from what the file already
    /// holds (an earlier interrupted run) and, when the connection drops,
    /// from where it stopped, with Range requests. Verifies size and digest
    /// over the whole file; on a mismatch the file is deleted and the blob
    /// refused. `progress` gets the byte count so far.
    pub fn fetch_blob(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        partial: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RegistryError> {
        let what = format!("blob {} of {repo}", desc.digest);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(io_err(partial))?;
        let mut have = file.metadata().map_err(io_err(partial))?.len();
        if have > desc.size {
            file.set_len(0).map_err(io_err(partial))?;
            have = 0;
        }
        // Hash what an earlier attempt left, so the digest covers the whole blob.
        let mut hasher = Sha256::new();
        if have > 0 {
            file.seek(SeekFrom::Start(0)).map_err(io_err(partial))?;
            let mut r = (&mut file).take(have);
            std::io::copy(&mut r, &mut HashWriter(&mut hasher)).map_err(io_err(partial))?;
        }
        file.seek(SeekFrom::Start(have)).map_err(io_err(partial))?;
        progress(have);
        let scopes = Self::pull_scope(repo);
        let mut failures = 0;
        let mut buf = vec![0u8; 256 * 1024];
        while have < desc.size || desc.size == 0 {
            let from = have;
            let resp = self.send(repo, &scopes, &|h, base| {
                let rb = h.get(format!("{base}/v2/{}/blobs/{}", repo.name, desc.digest));
                if from > 0 {
                    rb.header(header::RANGE, format!("bytes={from}-"))
                } else {
                    rb
                }
            })?;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT if from > 0 => {
                    let start = resp
                        .headers()
                        .get(header::CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("bytes "))
                        .and_then(|v| v.split('-').next())
                        .and_then(|v| v.parse::<u64>().ok());
                    if start != Some(from) {
                        return Err(RegistryError::Invalid {
                            what,
                            message: format!(
                                "asked for bytes from {from}, got Content-Range {start:?}"
                            ),
                        });
                    }
                }
                StatusCode::OK => {
                    if from > 0 {
                        // The server ignored the Range: start over.
                        file.set_len(0).map_err(io_err(partial))?;
                        file.seek(SeekFrom::Start(0)).map_err(io_err(partial))?;
                        hasher = Sha256::new();
                        have = 0;
                        progress(0);
                    }
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    file.set_len(0).map_err(io_err(partial))?;
                    file.seek(SeekFrom::Start(0)).map_err(io_err(partial))?;
                    hasher = Sha256::new();
                    have = 0;
                    continue;
                }
                _ => return Err(Self::status_error(repo, &what, resp)),
            }
            let mut resp = resp;
            let dropped = loop {
                match resp.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        if have + n as u64 > desc.size {
                            drop(file);
                            let _ = std::fs::remove_file(partial);
                            return Err(RegistryError::SizeMismatch {
                                what,
                                expected: desc.size,
                                actual: have + n as u64,
                            });
                        }
                        file.write_all(&buf[..n]).map_err(io_err(partial))?;
                        hasher.update(&buf[..n]);
                        have += n as u64;
                        progress(have);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(e),
                }
            };
            if desc.size == 0 {
                break;
            }
            if have < desc.size {
                failures += 1;
                if failures >= self.opts.max_attempts.max(1) {
                    file.sync_all().map_err(io_err(partial))?;
                    return Err(RegistryError::Transport {
                        registry: repo.registry.clone(),
                        message: format!(
                            "{what}: connection dropped at byte {have} of {} ({}); run the command again to resume",
                            desc.size,
                            dropped
                                .map(|e| error_chain(&e))
                                .unwrap_or_else(|| "early end of data".into())
                        ),
                    });
                }
                std::thread::sleep(self.opts.backoff);
            }
        }
        file.sync_all().map_err(io_err(partial))?;
        drop(file);
        let actual = Digest::from_bytes(hasher.finalize().into());
        if actual != desc.digest {
            let _ = std::fs::remove_file(partial);
            return Err(RegistryError::DigestMismatch {
                what,
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Size of a blob if the repository has it (HEAD).
    pub fn blob_exists(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let scopes = Self::push_scope(repo);
        let resp = self.send(repo, &scopes, &|h, base| {
            h.head(format!("{base}/v2/{}/blobs/{digest}", repo.name))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(Some(
                resp.headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
            )),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Self::status_error(
                repo,
                &format!("blob {digest} of {repo}"),
                resp,
            )),
        }
    }
}

pub(crate) struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
