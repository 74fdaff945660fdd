//! Blob uploads: HEAD skip, cross-repository mount, then a monolithic or
//! chunked upload session.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use strata_oci::Digest;
use strata_oci::image::Descriptor;

use crate::*;

impl Client {
    /// Uploads a blob unless the repository has it: HEAD, then a
    /// cross-repository mount from `mount_from` (a repository path on the
    /// same registry) when given, else an upload (one PUT, or PATCH chunks
    /// for blobs larger than the chunk size). `open` gives the content from
    /// the start each time it is called (a retry re-reads it).
    pub fn push_blob(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: &(dyn Fn() -> std::io::Result<File> + Sync),
    ) -> Result<BlobPush, RegistryError> {
        self.push_blob_from(repo, desc, mount_from, &|| {
            open().map(|f| Box::new(f) as Box<dyn Read + Send>)
        })
    }

    /// [`Client::push_blob`] for a small blob held in memory (an
    /// attestation's statement or config).
    pub fn push_blob_bytes(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        bytes: &[u8],
    ) -> Result<BlobPush, RegistryError> {
        let owned = bytes.to_vec();
        self.push_blob_from(repo, desc, None, &|| {
            Ok(Box::new(std::io::Cursor::new(owned.clone())) as Box<dyn Read + Send>)
        })
    }

    fn push_blob_from(
        &self,
        repo: &Repository,
        desc: &Descriptor,
        mount_from: Option<&str>,
        open: &(dyn Fn() -> std::io::Result<Box<dyn Read + Send>> + Sync),
    ) -> Result<BlobPush, RegistryError> {
        let what = format!("blob {} to {repo}", desc.digest);
        if self.blob_exists(repo, &desc.digest)?.is_some() {
            return Ok(BlobPush::AlreadyExists);
        }
        let mut scopes = Self::push_scope(repo);
        if let Some(from) = mount_from.filter(|f| *f != repo.name) {
            scopes.push(format!("repository:{from}:pull"));
        }
        let resp = self.send(repo, &scopes, &|h, base| {
            let mut url = format!("{base}/v2/{}/blobs/uploads/", repo.name);
            if let Some(from) = mount_from.filter(|f| *f != repo.name) {
                url.push_str(&format!("?mount={}&from={from}", desc.digest));
            }
            h.post(url).header(header::CONTENT_LENGTH, "0")
        })?;
        if resp.status() == StatusCode::CREATED {
            return Ok(BlobPush::Mounted);
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(Self::status_error(repo, &what, resp));
        }
        let ep = self.endpoint(&repo.endpoint)?;
        let mut location = upload_location(&ep.base, resp.headers(), &what)?;
        let mut file = open().map_err(|source| RegistryError::Io {
            path: PathBuf::from(desc.digest.to_string()),
            source,
        })?;
        if desc.size > self.opts.chunk_size {
            let mut offset = 0u64;
            while offset < desc.size {
                let len = self.opts.chunk_size.min(desc.size - offset);
                let mut chunk = vec![0u8; len as usize];
                file.read_exact(&mut chunk)
                    .map_err(|source| RegistryError::Io {
                        path: PathBuf::from(desc.digest.to_string()),
                        source,
                    })?;
                let loc = location.clone();
                let end = offset + len - 1;
                let resp = self.send(repo, &scopes, &|h, _| {
                    h.patch(&loc)
                        .header(header::CONTENT_TYPE, "application/octet-stream")
                        .header(header::CONTENT_RANGE, format!("{offset}-{end}"))
                        .body(chunk.clone())
                })?;
                if resp.status() != StatusCode::ACCEPTED {
                    return Err(Self::status_error(repo, &what, resp));
                }
                location = upload_location(&ep.base, resp.headers(), &what)?;
                offset += len;
            }
            let loc = with_digest(&location, &desc.digest);
            let resp = self.send(repo, &scopes, &|h, _| {
                h.put(&loc).header(header::CONTENT_LENGTH, "0")
            })?;
            if resp.status() != StatusCode::CREATED {
                return Err(Self::status_error(repo, &what, resp));
            }
        } else {
            let loc = with_digest(&location, &desc.digest);
            let size = desc.size;
            let resp = self.send(repo, &scopes, &|h, _| {
                let body = match open() {
                    Ok(f) => reqwest::blocking::Body::sized(f, size),
                    Err(_) => reqwest::blocking::Body::from(Vec::new()),
                };
                h.put(&loc)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body)
            })?;
            if resp.status() != StatusCode::CREATED {
                return Err(Self::status_error(repo, &what, resp));
            }
        }
        Ok(BlobPush::Uploaded)
    }
}

/// What happened to one blob on push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    AlreadyExists,
    Mounted,
    Uploaded,
}

pub(crate) fn upload_location(
    base: &str,
    headers: &HeaderMap,
    what: &str,
) -> Result<String, RegistryError> {
    let loc = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Invalid {
            what: what.to_owned(),
            message: "upload answer without a Location".into(),
        })?;
    Ok(
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_owned()
        } else {
            format!("{base}{loc}")
        },
    )
}

pub(crate) fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_locations_resolve_and_take_the_digest() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            "/v2/a/blobs/uploads/x?_state=1".parse().unwrap(),
        );
        let loc = upload_location("http://r:5000", &h, "t").unwrap();
        assert_eq!(loc, "http://r:5000/v2/a/blobs/uploads/x?_state=1");
        let d = Digest::of(b"");
        assert_eq!(with_digest(&loc, &d), format!("{loc}&digest={d}"));
        assert_eq!(
            with_digest("http://r/u", &d),
            format!("http://r/u?digest={d}")
        );
    }
}
