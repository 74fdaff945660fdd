//! Manifests and indexes: fetching one (size-limited, digest-verified),
//! resolving a reference to one platform's image (through mirrors), pushing
//! one; and the platform helpers (strata-oci's [`Platform`] rules).

use std::io::Read;

use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header::{self, HeaderMap};
use strata_oci::Digest;
use strata_oci::image::{
    Descriptor, Index, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST, Manifest, Platform,
};
use strata_oci::reference::{DOCKER_HUB, Reference};

use crate::client::*;
use crate::*;

impl Client {
    /// Fetches a manifest or index by tag or digest and verifies it: against
    /// the digest when one was asked for, else against the registry's
    /// `Docker-Content-Digest`.
    pub fn get_manifest(
        &self,
        repo: &Repository,
        selector: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = format!("manifest {repo}:{selector}");
        let what = what.replace(":sha256:", "@sha256:");
        let scopes = Self::pull_scope(repo);
        let resp = self.send(repo, &scopes, &|h, base| {
            h.get(format!("{base}/v2/{}/manifests/{selector}", repo.name))
                .header(header::ACCEPT, ACCEPT_MANIFESTS)
        })?;
        if !resp.status().is_success() {
            return Err(Self::status_error(repo, &what, resp));
        }
        let headers = resp.headers().clone();
        let bytes = read_limited(resp, MAX_MANIFEST_SIZE, &what)?;
        let actual = Digest::of(&bytes);
        let expected = match selector.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) => headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<Digest>().ok()),
        };
        if let Some(e) = expected
            && e != actual
        {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: e.to_string(),
                actual: actual.to_string(),
            });
        }
        let media_type = manifest_media_type(&headers, &bytes, &what)?;
        Ok(FetchedManifest {
            media_type,
            digest: actual,
            bytes,
        })
    }

    /// Resolves a reference to one platform's image: follows an index to the
    /// matching manifest, then fetches and verifies the config. Docker Hub
    /// references try the configured mirrors first.
    pub fn resolve(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let direct = Repository::of(reference);
        let mut candidates = Vec::new();
        if reference.registry == DOCKER_HUB {
            for m in &self.opts.mirrors {
                candidates.push(Repository {
                    endpoint: m.trim_end_matches('/').to_owned(),
                    ..direct.clone()
                });
            }
        }
        candidates.push(direct);
        let mut last_err = None;
        let n = candidates.len();
        for (i, repo) in candidates.into_iter().enumerate() {
            match self.resolve_in(&repo, reference, platform) {
                Ok(r) => return Ok(r),
                // A mirror that lacks the image or is down: try the next.
                Err(e) if i + 1 < n && e.is_not_found_or_unreachable() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.expect("at least the registry itself is a candidate"))
    }

    fn resolve_in(
        &self,
        repo: &Repository,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<ResolvedImage, RegistryError> {
        let top = self.get_manifest(repo, &reference.manifest_selector())?;
        let (index, manifest) = if top.is_index() {
            let idx = Index::from_json(&top.bytes)
                .map_err(crate::context(format!("index {reference}")))?;
            let pick = pick_platform(&idx.manifests, platform).ok_or_else(|| {
                RegistryError::NoPlatform {
                    reference: reference.to_string(),
                    platform: platform_string(platform),
                    available: idx
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref().map(platform_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let m = self.get_manifest(repo, &pick.digest.to_string())?;
            if m.is_index() {
                return Err(RegistryError::Invalid {
                    what: format!("index {reference}"),
                    message: "an index entry points at another index".into(),
                });
            }
            (Some(top), m)
        } else {
            (None, top)
        };
        let parsed = Manifest::from_json(&manifest.bytes)
            .map_err(crate::context(format!("manifest {reference}")))?;
        let config = self.get_blob_bytes(repo, &parsed.config.digest, MAX_CONFIG_SIZE)?;
        Ok(ResolvedImage {
            repository: repo.clone(),
            index,
            manifest,
            parsed,
            config,
        })
    }

    /// Uploads a manifest under a tag or digest; returns its digest.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let what = format!("manifest {repo}:{reference}");
        let scopes = Self::push_scope(repo);
        let resp = self.send(repo, &scopes, &|h, base| {
            h.put(format!("{base}/v2/{}/manifests/{reference}", repo.name))
                .header(header::CONTENT_TYPE, media_type)
                .body(bytes.to_vec())
        })?;
        if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
            return Err(Self::status_error(repo, &what, resp));
        }
        let ours = Digest::of(bytes);
        if let Some(theirs) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Digest>().ok())
            && theirs != ours
        {
            return Err(RegistryError::DigestMismatch {
                what,
                expected: ours.to_string(),
                actual: theirs.to_string(),
            });
        }
        Ok(ours)
    }
}

pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A manifest (or index) as the registry served it, verified.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

impl FetchedManifest {
    pub fn is_index(&self) -> bool {
        self.media_type == MEDIA_TYPE_OCI_INDEX || self.media_type == MEDIA_TYPE_DOCKER_LIST
    }
}

/// An image resolved to one platform: its manifest and config, verified.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Where it was found (the registry, or a mirror of it).
    pub repository: Repository,
    /// The index it was picked from, if the reference named one.
    pub index: Option<FetchedManifest>,
    pub manifest: FetchedManifest,
    pub parsed: Manifest,
    pub config: Vec<u8>,
}

pub(crate) fn read_limited(
    resp: Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    resp.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RegistryError::Transport {
            registry: what.to_owned(),
            message: error_chain(&e),
        })?;
    if out.len() > limit {
        return Err(RegistryError::Invalid {
            what: what.to_owned(),
            message: format!("larger than {limit} bytes"),
        });
    }
    Ok(out)
}

pub(crate) fn manifest_media_type(
    headers: &HeaderMap,
    bytes: &[u8],
    what: &str,
) -> Result<String, RegistryError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(crate::context(format!("{what}: not JSON")))?;
    if v["schemaVersion"] == 1 {
        return Err(RegistryError::Invalid {
            what: what.to_owned(),
            message: "Docker schema 1 manifests are not supported (deprecated by Docker in 2019)"
                .into(),
        });
    }
    let from_body = v["mediaType"].as_str().filter(|s| !s.is_empty());
    let from_header = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim());
    let mt = from_body
        .or(from_header)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if v.get("manifests").is_some() {
                MEDIA_TYPE_OCI_INDEX.to_owned()
            } else {
                MEDIA_TYPE_OCI_MANIFEST.to_owned()
            }
        });
    match mt.as_str() {
        MEDIA_TYPE_OCI_INDEX
        | MEDIA_TYPE_DOCKER_LIST
        | MEDIA_TYPE_OCI_MANIFEST
        | MEDIA_TYPE_DOCKER_MANIFEST => Ok(mt),
        other => Err(RegistryError::Invalid {
            what: what.to_owned(),
            message: format!("unsupported manifest media type {other:?}"),
        }),
    }
}

/// `linux/amd64`, `linux/arm/v7` (the platform's `Display`).
pub fn platform_string(p: &Platform) -> String {
    p.to_string()
}

/// Parses and normalises `os/arch[/variant]` (see [`Platform`]'s `FromStr`).
pub fn parse_platform(s: &str) -> Option<Platform> {
    s.parse().ok()
}

/// The host's platform, normalised (`linux/amd64`, `linux/arm64`, ...).
pub fn host_platform() -> Platform {
    Platform::host()
}

/// Picks the index entry for `want` as containerd's `platforms.Only(want)`
/// orders them: the wanted platform itself first, then what it also runs
/// (see [`strata_oci::platform`]).
pub fn pick_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    want.pick(
        entries
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| (p, d))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(arch.as_bytes()), 1);
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            variant: variant.map(str::to_owned),
        });
        d
    }

    #[test]
    fn platform_matching_follows_containerd() {
        let list = [
            desc("arm", Some("v7")),
            desc("arm64", None),
            desc("amd64", None),
        ];
        let want = |s| parse_platform(s).unwrap();
        let got = |s| pick_platform(&list, &want(s)).map(|d| d.digest);
        assert_eq!(got("linux/amd64"), Some(list[2].digest));
        assert_eq!(got("linux/arm64"), Some(list[1].digest));
        assert_eq!(got("linux/arm64/v8"), Some(list[1].digest));
        assert_eq!(got("linux/arm/v7"), Some(list[0].digest));
        assert_eq!(got("linux/arm/v6"), None);
        assert_eq!(got("linux/s390x"), None);
        assert_eq!(platform_string(&want("linux/arm/v7")), "linux/arm/v7");
        assert!(parse_platform("linux").is_none());
    }
}
