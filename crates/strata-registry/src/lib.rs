//! A client for OCI distribution (registry v2) APIs: transport and TLS policy,
//! authentication (anonymous, Basic, Bearer tokens from `WWW-Authenticate`,
//! Docker's config.json and credential helpers), manifests and indexes
//! resolved to a platform, digest-verified resumable blob downloads, and
//! uploads (existence checks, cross-repository mounts, monolithic and chunked).
//!
//! The client is blocking (reqwest's blocking client, which runs its own
//! tokio runtime); callers fetch layers in parallel with threads. It knows
//! nothing of strata's store: blobs go to a file the caller names, and the
//! caller moves them into place once verified.
//!
//! Transport policy: HTTPS with the system roots plus any `--registry-ca`
//! files and `certs.d/<host>/*.crt`; plain HTTP only for loopback hosts and
//! registries named as insecure (whose TLS certificates are then not
//! verified either, as Docker does for `--insecure-registry`).

pub mod auth;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{self, HeaderMap};
use sha2::{Digest as _, Sha256};
use strata_oci::Digest;
use strata_oci::image::{
    Descriptor, Index, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST, Manifest, Platform,
};
use strata_oci::reference::{DOCKER_HUB, Reference};

pub use auth::{Credentials, DockerConfig};

/// Manifests larger than this are refused (containerd uses the same bound).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Config blobs larger than this are refused.
pub const MAX_CONFIG_SIZE: usize = 16 << 20;

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("docker config: {0}")]
    Config(String),
    #[error("credential helper {helper}: {message}")]
    CredentialHelper { helper: String, message: String },
    #[error("cannot reach registry {registry}: {message}")]
    Transport { registry: String, message: String },
    #[error(
        "TLS with {registry} failed: {message}\n  hint: pass the registry's CA with --registry-ca FILE or put it in /etc/docker/certs.d/{registry}/ca.crt; use --insecure-registry {registry} only for a registry you trust"
    )]
    Tls { registry: String, message: String },
    #[error(
        "{what}: authentication required by {registry}{detail}\n  hint: run `strata login {registry}`"
    )]
    Unauthorized {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{what}: access denied by {registry}{detail}")]
    Denied {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{what}: not found{detail}\n  hint: check the repository name and tag")]
    NotFound { what: String, detail: String },
    #[error("{what}: registry answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{what}: content does not match its digest (expected {expected}, got {actual}); refused"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: expected {expected} bytes, got {actual}; refused")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("{reference}: no image for platform {platform} (the index has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RegistryError {
    /// Errors worth trying the next mirror (or the registry itself) for.
    fn is_not_found_or_unreachable(&self) -> bool {
        !matches!(
            self,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. }
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How the client reaches registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Hosts (`host[:port]`) that may be spoken to over plain HTTP, and whose
    /// TLS certificates are not verified.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA files trusted for every registry.
    pub ca_files: Vec<PathBuf>,
    /// Folders holding `<host[:port]>/*.crt` CA files, as Docker's certs.d.
    pub certs_dirs: Vec<PathBuf>,
    /// Mirrors of Docker Hub (`https://mirror.example` or `http://127.0.0.1:5000`),
    /// tried in order before Docker Hub itself for pulls.
    pub mirrors: Vec<String>,
    /// Credentials given for this run (e.g. by `login`), before config.json.
    pub credentials: HashMap<String, Credentials>,
    /// Whether to read ~/.docker/config.json and its helpers.
    pub use_docker_config: bool,
    /// Tries per request on dropped connections, 429 and 5xx.
    pub max_attempts: u32,
    /// First backoff delay; doubled per retry.
    pub backoff: Duration,
    /// Uploads larger than this are sent in chunks of this size (PATCH),
    /// smaller ones in one PUT.
    pub chunk_size: u64,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let mut certs_dirs = vec![
            PathBuf::from("/etc/docker/certs.d"),
            PathBuf::from("/etc/containers/certs.d"),
        ];
        if let Some(home) = std::env::var_os("HOME") {
            certs_dirs.push(PathBuf::from(home).join(".docker/certs.d"));
        }
        Self {
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            certs_dirs,
            mirrors: Vec::new(),
            credentials: HashMap::new(),
            use_docker_config: true,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            chunk_size: 64 << 20,
            user_agent: concat!("strata/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

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

/// A repository on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Endpoint key: `host[:port]`, or a mirror's `scheme://host[:port]`.
    pub endpoint: String,
    /// Path of the repository (`library/alpine`).
    pub name: String,
    /// The registry as users name it, for messages and credentials.
    pub registry: String,
}

impl Repository {
    pub fn of(r: &Reference) -> Self {
        Self {
            endpoint: r.api_host().to_owned(),
            name: r.repository.clone(),
            registry: r.registry.clone(),
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// What happened to one blob on push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    AlreadyExists,
    Mounted,
    Uploaded,
}

struct Endpoint {
    base: String,
    http: Http,
}

/// The registry client. Cheap to share between threads.
pub struct Client {
    opts: ClientOptions,
    config: Option<DockerConfig>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Authorization header values by (endpoint, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}

fn is_loopback(host: &str) -> bool {
    let h = host
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host));
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn looks_like_tls_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("certificate") || m.contains("unknownissuer") || m.contains("invalidcertificate")
}

/// A short summary of a registry error body (`{"errors":[{"code","message"}]}`).
fn error_detail(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(errs) = v["errors"].as_array()
    {
        let parts: Vec<String> = errs
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e["code"].as_str().unwrap_or("ERROR"),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect();
        if !parts.is_empty() {
            return format!(" ({})", parts.join("; "));
        }
    }
    let t = body.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(" ({})", t.chars().take(200).collect::<String>())
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("insecure_registries", &self.opts.insecure_registries)
            .field("mirrors", &self.opts.mirrors)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(opts: ClientOptions) -> Result<Self, RegistryError> {
        let config = if opts.use_docker_config {
            Some(DockerConfig::load()?)
        } else {
            None
        };
        Ok(Self {
            opts,
            config,
            endpoints: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn insecure(&self, host: &str) -> bool {
        self.opts.insecure_registries.iter().any(|h| h == host)
    }

    fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = self.opts.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        match &self.config {
            Some(c) => c.credentials(registry),
            None => Ok(None),
        }
    }

    fn http_client(&self, host: &str, skip_verify: bool) -> Result<Http, RegistryError> {
        let mut certs = Vec::new();
        let mut files: Vec<PathBuf> = self.opts.ca_files.clone();
        for d in &self.opts.certs_dirs {
            let dir = d.join(host);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                let mut found: Vec<PathBuf> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                    .collect();
                found.sort();
                files.extend(found);
            }
        }
        for f in &files {
            let pem = fs_err::read(f).map_err(|e| RegistryError::Config(e.to_string()))?;
            let list = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RegistryError::Config(format!("{}: not a PEM certificate: {e}", f.display()))
            })?;
            certs.extend(list);
        }
        let mut b = Http::builder()
            .user_agent(self.opts.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            // The blocking client applies this to each operation (connect,
            // each read of the body), not to a whole transfer: large layers
            // are fine, a stalled read fails and is resumed with a Range.
            .timeout(Duration::from_secs(120))
            .tls_certs_merge(certs);
        if skip_verify {
            b = b.tls_danger_accept_invalid_certs(true);
        }
        b.build().map_err(|e| RegistryError::Transport {
            registry: host.to_owned(),
            message: error_chain(&e),
        })
    }

    /// The endpoint for `key`: a mirror URL with its scheme, or a host whose
    /// scheme is found by pinging `/v2/` (HTTPS first; plain HTTP only where
    /// allowed).
    fn endpoint(&self, key: &str) -> Result<Arc<Endpoint>, RegistryError> {
        if let Some(e) = self.endpoints.lock().expect("endpoint map").get(key) {
            return Ok(e.clone());
        }
        let ep = if let Some(rest) = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
        {
            let host = rest.trim_end_matches('/');
            Endpoint {
                base: key.trim_end_matches('/').to_owned(),
                http: self.http_client(host, self.insecure(host))?,
            }
        } else {
            self.probe(key)?
        };
        let ep = Arc::new(ep);
        self.endpoints
            .lock()
            .expect("endpoint map")
            .insert(key.to_owned(), ep.clone());
        Ok(ep)
    }

    fn probe(&self, host: &str) -> Result<Endpoint, RegistryError> {
        let insecure = self.insecure(host);
        let plain_ok = insecure || is_loopback(host);
        let https = self.http_client(host, insecure)?;
        let url = format!("https://{host}/v2/");
        // Where plain HTTP is allowed, one HTTPS try decides: a plain server
        // answers a TLS hello with garbage, which retrying will not change.
        let first = if plain_ok {
            https
                .get(&url)
                .send()
                .map_err(|e| RegistryError::Transport {
                    registry: host.to_owned(),
                    message: error_chain(&e),
                })
        } else {
            self.retrying_send(host, || https.get(&url))
        };
        let tls_err = match first {
            Ok(_) => {
                return Ok(Endpoint {
                    base: format!("https://{host}"),
                    http: https,
                });
            }
            Err(e) => e,
        };
        let tls_msg = match &tls_err {
            RegistryError::Transport { message, .. } => message.clone(),
            _ => return Err(tls_err),
        };
        if plain_ok && !looks_like_tls_failure(&tls_msg) {
            let http = self.http_client(host, false)?;
            let url = format!("http://{host}/v2/");
            let plain = self.retrying_send(host, || http.get(&url));
            if let Ok(resp) = plain {
                let https_only = resp.status() == StatusCode::BAD_REQUEST
                    && resp
                        .text()
                        .unwrap_or_default()
                        .contains("HTTP request to an HTTPS server");
                if !https_only {
                    return Ok(Endpoint {
                        base: format!("http://{host}"),
                        http,
                    });
                }
            }
        }
        if looks_like_tls_failure(&tls_msg) {
            return Err(RegistryError::Tls {
                registry: host.to_owned(),
                message: tls_msg,
            });
        }
        Err(tls_err)
    }

    /// Sends with retries on dropped connections, 429 and 5xx (honouring
    /// `Retry-After`), with exponential backoff.
    fn retrying_send(
        &self,
        registry: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let mut delay = self.opts.backoff;
        let mut attempt = 1;
        loop {
            let res = build().send();
            let last = attempt >= self.opts.max_attempts.max(1);
            match res {
                Ok(resp) => {
                    let s = resp.status();
                    let retry = s == StatusCode::TOO_MANY_REQUESTS
                        || matches!(s.as_u16(), 500 | 502 | 503 | 504);
                    if !retry || last {
                        return Ok(resp);
                    }
                    if let Some(secs) = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        delay = delay.max(Duration::from_secs(secs.min(60)));
                    }
                }
                Err(e) => {
                    let msg = error_chain(&e);
                    // A certificate problem does not get better by retrying.
                    if last || looks_like_tls_failure(&msg) || e.is_builder() {
                        return Err(RegistryError::Transport {
                            registry: registry.to_owned(),
                            message: msg,
                        });
                    }
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(30));
            attempt += 1;
        }
    }

    /// Sends a request to a repository, authenticating on a 401 challenge
    /// (Basic, or a Bearer token for `scopes`) and retrying transient failures.
    fn send(
        &self,
        repo: &Repository,
        scopes: &[String],
        build: &dyn Fn(&Http, &str) -> RequestBuilder,
    ) -> Result<Response, RegistryError> {
        let ep = self.endpoint(&repo.endpoint)?;
        let scope_key = scopes.join(" ");
        let key = (repo.endpoint.clone(), scope_key);
        let mut authenticated = false;
        loop {
            let cached = self.tokens.lock().expect("token map").get(&key).cloned();
            let resp = self.retrying_send(&repo.registry, || {
                let rb = build(&ep.http, &ep.base);
                match &cached {
                    Some(a) => rb.header(header::AUTHORIZATION, a),
                    None => rb,
                }
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED || authenticated {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(auth::parse_challenge)
                .find(|c| c.scheme == "bearer" || c.scheme == "basic");
            let Some(challenge) = challenge else {
                return Ok(resp);
            };
            let value = self.authorize(&ep, repo, scopes, &challenge)?;
            self.tokens
                .lock()
                .expect("token map")
                .insert(key.clone(), value);
            authenticated = true;
        }
    }

    fn authorize(
        &self,
        ep: &Endpoint,
        repo: &Repository,
        scopes: &[String],
        challenge: &auth::Challenge,
    ) -> Result<String, RegistryError> {
        let creds = self.credentials(&repo.registry)?;
        if challenge.scheme == "basic" {
            return match creds {
                Some(c) => Ok(c.basic_header()),
                None => Err(RegistryError::Unauthorized {
                    what: repo.to_string(),
                    registry: repo.registry.clone(),
                    detail: " (Basic auth; no credentials stored)".into(),
                }),
            };
        }
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| RegistryError::Invalid {
                what: repo.registry.clone(),
                message: "Bearer challenge without a realm".into(),
            })?;
        let mut url = reqwest::Url::parse(realm).map_err(|e| RegistryError::Invalid {
            what: repo.registry.clone(),
            message: format!("bad token realm {realm:?}: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = challenge.params.get("service") {
                q.append_pair("service", s);
            }
            let mut all: Vec<&str> = scopes.iter().map(String::as_str).collect();
            if let Some(s) = challenge.params.get("scope")
                && !all.contains(&s.as_str())
            {
                all.push(s);
            }
            for s in all {
                q.append_pair("scope", s);
            }
        }
        let resp = self.retrying_send(&repo.registry, || {
            let rb = ep.http.get(url.clone());
            match &creds {
                Some(c) => rb.header(header::AUTHORIZATION, c.basic_header()),
                None => rb,
            }
        })?;
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                what: repo.to_string(),
                registry: repo.registry.clone(),
                detail: if creds.is_some() {
                    " (the token service rejected the stored credentials)".into()
                } else {
                    " (no credentials stored)".into()
                },
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                what: format!("token from {realm}"),
                status: status.as_u16(),
                detail: error_detail(&body),
            });
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| RegistryError::Invalid {
                what: format!("token from {realm}"),
                message: e.to_string(),
            })?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Invalid {
                what: format!("token from {realm}"),
                message: "no token in the answer".into(),
            })?;
        Ok(format!("Bearer {token}"))
    }

    /// Maps a non-success status to an error naming `what`.
    fn status_error(repo: &Repository, what: &str, resp: Response) -> RegistryError {
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        let detail = error_detail(&body);
        match status {
            StatusCode::UNAUTHORIZED => RegistryError::Unauthorized {
                what: what.to_owned(),
                registry: repo.registry.clone(),
                detail,
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                what: what.to_owned(),
                registry: repo.registry.clone(),
                detail,
            },
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                what: what.to_owned(),
                detail,
            },
            s => RegistryError::Status {
                what: what.to_owned(),
                status: s.as_u16(),
                detail,
            },
        }
    }

    fn pull_scope(repo: &Repository) -> Vec<String> {
        vec![format!("repository:{}:pull", repo.name)]
    }

    fn push_scope(repo: &Repository) -> Vec<String> {
        vec![format!("repository:{}:pull,push", repo.name)]
    }

    /// Downloads `url` (a remote build context) into `dest`, with the same
    /// TLS policy as registries, retries included. Returns the
    /// Content-Type the server gave, if any.
    pub fn download(&self, url: &str, dest: &Path) -> Result<Option<String>, RegistryError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| RegistryError::Invalid {
            what: url.to_owned(),
            message: e.to_string(),
        })?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(RegistryError::Invalid {
                    what: url.to_owned(),
                    message: "no host".into(),
                });
            }
        };
        let http = self.http_client(&host, self.insecure(&host))?;
        let resp = self.retrying_send(&host, || http.get(parsed.clone()))?;
        if !resp.status().is_success() {
            return Err(RegistryError::Status {
                what: url.to_owned(),
                status: resp.status().as_u16(),
                detail: String::new(),
            });
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut file = File::create(dest).map_err(io_err(dest))?;
        let mut resp = resp;
        std::io::copy(&mut resp, &mut file).map_err(|e| RegistryError::Transport {
            registry: host.clone(),
            message: error_chain(&e),
        })?;
        Ok(content_type)
    }

    /// Checks that the registry accepts these credentials (what `login` does).
    pub fn check_login(&self, registry: &str) -> Result<(), RegistryError> {
        let endpoint = if registry == DOCKER_HUB {
            strata_oci::reference::DOCKER_HUB_API.to_owned()
        } else {
            registry.to_owned()
        };
        let repo = Repository {
            endpoint,
            name: String::new(),
            registry: registry.to_owned(),
        };
        let resp = self.send(&repo, &[], &|h, base| h.get(format!("{base}/v2/")))?;
        if resp.status().is_success() {
            Ok(())
        } else if resp.status() == StatusCode::UNAUTHORIZED {
            Err(RegistryError::Unauthorized {
                what: "login".into(),
                registry: registry.to_owned(),
                detail: " (the registry rejected these credentials)".into(),
            })
        } else {
            Err(Self::status_error(&repo, "login", resp))
        }
    }

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
            let idx = Index::from_json(&top.bytes).map_err(|e| RegistryError::Invalid {
                what: format!("index {reference}"),
                message: e.to_string(),
            })?;
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
        let parsed = Manifest::from_json(&manifest.bytes).map_err(|e| RegistryError::Invalid {
            what: format!("manifest {reference}"),
            message: e.to_string(),
        })?;
        let config = self.get_blob_bytes(repo, &parsed.config.digest, MAX_CONFIG_SIZE)?;
        Ok(ResolvedImage {
            repository: repo.clone(),
            index,
            manifest,
            parsed,
            config,
        })
    }

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

struct HashWriter<'a>(&'a mut Sha256);
impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_limited(resp: Response, limit: usize, what: &str) -> Result<Vec<u8>, RegistryError> {
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

fn manifest_media_type(
    headers: &HeaderMap,
    bytes: &[u8],
    what: &str,
) -> Result<String, RegistryError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::Invalid {
            what: what.to_owned(),
            message: format!("not JSON: {e}"),
        })?;
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

fn upload_location(base: &str, headers: &HeaderMap, what: &str) -> Result<String, RegistryError> {
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

fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// `linux/amd64`, `linux/arm64/v8`.
pub fn platform_string(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if let Some(v) = p.variant.as_deref().filter(|v| !v.is_empty()) {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Parses `os/arch[/variant]`.
pub fn parse_platform(s: &str) -> Option<Platform> {
    let mut parts = s.split('/');
    let os = parts.next().filter(|p| !p.is_empty())?;
    let arch = parts.next().filter(|p| !p.is_empty())?;
    let variant = parts.next().map(str::to_owned);
    if parts.next().is_some() {
        return None;
    }
    Some(Platform {
        architecture: arch.to_owned(),
        os: os.to_owned(),
        os_version: None,
        variant,
    })
}

/// The host's platform (`linux/amd64`, `linux/arm64/v8`, ...).
pub fn host_platform() -> Platform {
    let arch = strata_oci::image::host_architecture();
    Platform {
        architecture: arch.to_owned(),
        os: "linux".to_owned(),
        os_version: None,
        variant: (arch == "arm64").then(|| "v8".to_owned()),
    }
}

/// Picks the index entry for `want`, as containerd's platform matcher does:
/// os and architecture equal, and the variant equal when both name one
/// (arm64's `v8` is the default when absent).
pub fn pick_platform<'a>(entries: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let norm = |p: &Platform| {
        let v = p.variant.clone().filter(|v| !v.is_empty());
        match (p.architecture.as_str(), v) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v,
        }
    };
    let want_v = norm(want);
    entries.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && (want_v.is_none() || norm(p) == want_v)
        })
    })
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

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("example.com"));
    }

    #[test]
    fn error_bodies_are_summarised() {
        assert_eq!(
            error_detail(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
            ),
            " (MANIFEST_UNKNOWN: manifest unknown)"
        );
        assert_eq!(error_detail(""), "");
    }

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
