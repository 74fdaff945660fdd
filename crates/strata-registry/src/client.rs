//! The transport: client options, TLS policy and HTTP clients per
//! endpoint, probing an endpoint's scheme, sending with retries, and
//! authorization (Basic, Bearer tokens per scope); plus `login`'s check.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{self};
use rustls::pki_types::CertificateDer;
use strata_oci::reference::DOCKER_HUB;

use crate::*;

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

    pub(crate) fn insecure(&self, host: &str) -> bool {
        self.opts.insecure_registries.iter().any(|h| h == host)
    }

    pub(crate) fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = self.opts.credentials.get(registry) {
            return Ok(Some(c.clone()));
        }
        match &self.config {
            Some(c) => c.credentials(registry),
            None => Ok(None),
        }
    }

    pub(crate) fn http_client(&self, host: &str, skip_verify: bool) -> Result<Http, RegistryError> {
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
            let pem = std::fs::read(f).map_err(io_err(f))?;
            let list = reqwest::Certificate::from_pem_bundle(&pem).map_err(crate::context(
                format!("{}: not a PEM certificate", f.display()),
            ))?;
            certs.extend(list);
        }
        install_crypto_provider();
        certs.extend(root_certificates().iter().cloned());
        let mut b = Http::builder()
            .user_agent(self.opts.user_agent.clone())
            .connect_timeout(Duration::from_secs(30))
            // The blocking client applies this to each operation (connect,
            // each read of the body), not to a whole transfer: large layers
            // are fine, a stalled read fails and is resumed with a Range.
            .timeout(Duration::from_secs(120))
            // Only these roots: reqwest's platform verifier fails outright on
            // a system without a CA bundle, even for a plain-HTTP registry.
            .tls_certs_only(certs);
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
    pub(crate) fn endpoint(&self, key: &str) -> Result<Arc<Endpoint>, RegistryError> {
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

    pub(crate) fn probe(&self, host: &str) -> Result<Endpoint, RegistryError> {
        let insecure = self.insecure(host);
        if is_loopback(host) {
            // Docker treats loopback registries as insecure; plain HTTP first
            // means a local registry needs no TLS at all (nor a CA bundle).
            // One try: a TLS server says so or drops the connection, and
            // then HTTPS is probed as for any other host.
            let http = self.http_client(host, false)?;
            let url = format!("http://{host}/v2/");
            if let Ok(resp) = http.get(&url).send()
                && !answers_https_only(resp)
            {
                return Ok(Endpoint {
                    base: format!("http://{host}"),
                    http,
                });
            }
        }
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
            if let Ok(resp) = plain
                && !answers_https_only(resp)
            {
                return Ok(Endpoint {
                    base: format!("http://{host}"),
                    http,
                });
            }
        }
        if looks_like_tls_failure(&tls_msg) {
            return Err(RegistryError::Tls {
                registry: host.to_owned(),
                message: tls_msg,
                roots: root_source(),
            });
        }
        Err(tls_err)
    }

    /// Sends with retries on dropped connections, 429 and 5xx (honouring
    /// `Retry-After`), with exponential backoff.
    pub(crate) fn retrying_send(
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
    pub(crate) fn send(
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

    pub(crate) fn authorize(
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
    pub(crate) fn status_error(repo: &Repository, what: &str, resp: Response) -> RegistryError {
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

    pub(crate) fn pull_scope(repo: &Repository) -> Vec<String> {
        vec![format!("repository:{}:pull", repo.name)]
    }

    pub(crate) fn push_scope(repo: &Repository) -> Vec<String> {
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

/// Whether a plain-HTTP answer is a TLS server's "HTTP request to an HTTPS
/// server" (Go's net/http; nginx says "plain HTTP request was sent to HTTPS
/// port").
fn answers_https_only(resp: Response) -> bool {
    resp.status() == StatusCode::BAD_REQUEST && {
        let body = resp.text().unwrap_or_default();
        body.contains("HTTP request to an HTTPS server")
            || body.contains("plain HTTP request was sent to HTTPS port")
    }
}

/// Makes ring the process's rustls provider unless one is installed already
/// (reqwest is built without a provider of its own; see docs/decisions.md).
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // An error means another part of the process installed a provider
        // first, which then serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Where the trusted roots came from, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The system bundle (`/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    System,
    /// No system bundle: the Mozilla roots compiled into strata
    /// (webpki-root-certs), as in a `FROM scratch` container.
    BuiltIn,
}

impl std::fmt::Display for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootSource::System => "the system's CA bundle",
            RootSource::BuiltIn => {
                "strata's built-in Mozilla roots, as the system has no CA bundle"
            }
        })
    }
}

/// The trusted roots: the system's when it has any, else the built-in set.
pub fn root_source() -> RootSource {
    roots().0
}

fn root_certificates() -> &'static [reqwest::Certificate] {
    &roots().1
}

fn roots() -> &'static (RootSource, Vec<reqwest::Certificate>) {
    static ROOTS: OnceLock<(RootSource, Vec<reqwest::Certificate>)> = OnceLock::new();
    ROOTS.get_or_init(|| roots_from(&rustls_native_certs::load_native_certs().certs))
}

/// The roots to trust given the system's certificates (`system`, as
/// rustls-native-certs found them): those that parse, else the built-in
/// Mozilla set. reqwest refuses the whole set if one root does not parse,
/// so unusable entries are skipped here, as rustls' own
/// `add_parsable_certificates` does.
fn roots_from(system: &[CertificateDer<'_>]) -> (RootSource, Vec<reqwest::Certificate>) {
    let usable = |der: &CertificateDer<'_>| -> Option<reqwest::Certificate> {
        rustls::RootCertStore::empty().add(der.clone()).ok()?;
        reqwest::Certificate::from_der(der).ok()
    };
    let system: Vec<_> = system.iter().filter_map(usable).collect();
    if !system.is_empty() {
        return (RootSource::System, system);
    }
    let builtin = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .filter_map(usable)
        .collect();
    (RootSource::BuiltIn, builtin)
}

pub(crate) fn is_loopback(host: &str) -> bool {
    let h = host
        .strip_prefix('[')
        .and_then(|r| r.split(']').next())
        .unwrap_or_else(|| host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host));
    h == "localhost"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

pub(crate) fn looks_like_tls_failure(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("certificate") || m.contains("unknownissuer") || m.contains("invalidcertificate")
}

/// A short summary of a registry error body (`{"errors":[{"code","message"}]}`).
pub(crate) fn error_detail(body: &str) -> String {
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

#[cfg(test)]
mod tests;
