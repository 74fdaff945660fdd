//! Credentials and challenges: `~/.docker/config.json` (`auths`, `credsStore`,
//! `credHelpers` through `docker-credential-*` programs), `WWW-Authenticate`
//! parsing, and the Basic header.
//!
//! The file format and helper protocol are Docker's (docker/cli
//! `cli/config/configfile`, docker/docker-credential-helpers): `auths` maps a
//! server to `{"auth": base64("user:password")}`; a helper is run as
//! `docker-credential-NAME get|store|erase` with the server on stdin and
//! `{"ServerURL","Username","Secret"}` JSON on stdout/stdin.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value};

use crate::RegistryError;

/// The key Docker uses for Docker Hub in config.json.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in debug output.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        format!(
            "Basic {}",
            B64.encode(format!("{}:{}", self.username, self.password))
        )
    }
}

/// The config.json key for a registry host (`docker.io` is keyed by the
/// Hub's legacy v1 URL, as `docker login` writes it).
pub fn config_key(registry: &str) -> String {
    if registry == strata_oci::reference::DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// The Docker CLI config file: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn docker_config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

/// Where credentials come from: the Docker config file and its helpers.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    path: PathBuf,
    raw: Map<String, Value>,
}

impl DockerConfig {
    /// Reads the config at the default path (a missing file is an empty config).
    pub fn load() -> Result<Self, RegistryError> {
        Self::load_from(docker_config_path())
    }

    pub fn load_from(path: PathBuf) -> Result<Self, RegistryError> {
        let raw = match std::fs::read(&path) {
            Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(b) => match serde_json::from_slice::<Value>(&b) {
                Ok(Value::Object(m)) => m,
                Ok(_) | Err(_) => {
                    return Err(RegistryError::Config(format!(
                        "{} is not a JSON object",
                        path.display()
                    )));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
            Err(source) => return Err(RegistryError::Io { path, source }),
        };
        Ok(Self { path, raw })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn helper_for(&self, key: &str) -> Option<String> {
        self.raw
            .get("credHelpers")
            .and_then(|h| h.get(key))
            .and_then(Value::as_str)
            .or_else(|| self.raw.get("credsStore").and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    /// Credentials for a registry host, if any are configured.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>, RegistryError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            return helper_get(&helper, &key);
        }
        let Some(auths) = self.raw.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // Docker accepts the bare host and URL forms (`https://host/v1/`).
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| strip_url(k) == registry)
                .map(|(_, v)| v)
        });
        let Some(entry) = entry else { return Ok(None) };
        if let Some(a) = entry
            .get("auth")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let decoded = B64.decode(a).map_err(|_| {
                RegistryError::Config(format!(
                    "{}: auths[{key:?}].auth is not base64",
                    self.path.display()
                ))
            })?;
            let s = String::from_utf8_lossy(&decoded);
            let (u, p) = s.split_once(':').ok_or_else(|| {
                RegistryError::Config(format!(
                    "{}: auths[{key:?}].auth is not user:password",
                    self.path.display()
                ))
            })?;
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
        let user = entry.get("username").and_then(Value::as_str);
        let pass = entry.get("password").and_then(Value::as_str);
        Ok(match (user, pass) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => None,
        })
    }

    /// Saves credentials as `docker login` does: into the helper when one is
    /// configured, else base64 in `auths`. The file is replaced atomically
    /// and kept private (0600).
    pub fn store(&mut self, registry: &str, creds: &Credentials) -> Result<(), RegistryError> {
        let key = config_key(registry);
        if let Some(helper) = self.helper_for(&key) {
            let body = serde_json::json!({"ServerURL": key, "Username": creds.username, "Secret": creds.password});
            run_helper(&helper, "store", body.to_string().as_bytes())?;
            // Docker records an empty entry so that `logout` knows the server.
            self.auths_mut().insert(key, Value::Object(Map::new()));
        } else {
            let auth = B64.encode(format!("{}:{}", creds.username, creds.password));
            self.auths_mut()
                .insert(key, serde_json::json!({ "auth": auth }));
        }
        self.save()
    }

    /// Removes stored credentials; returns whether there were any.
    pub fn erase(&mut self, registry: &str) -> Result<bool, RegistryError> {
        let key = config_key(registry);
        let mut had = false;
        if let Some(helper) = self.helper_for(&key) {
            had |= run_helper(&helper, "erase", key.as_bytes()).is_ok();
        }
        let auths = self.auths_mut();
        had |= auths.remove(&key).is_some();
        let other: Vec<String> = auths
            .keys()
            .filter(|k| strip_url(k) == registry)
            .cloned()
            .collect();
        for k in other {
            had |= auths.remove(&k).is_some();
        }
        self.save()?;
        Ok(had)
    }

    fn auths_mut(&mut self) -> &mut Map<String, Value> {
        let v = self
            .raw
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        v.as_object_mut().expect("just made an object")
    }

    fn save(&self) -> Result<(), RegistryError> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).map_err(crate::io_err(dir))?;
        let mut body =
            serde_json::to_vec_pretty(&self.raw).map_err(crate::context("docker config"))?;
        body.push(b'\n');
        // The temp file is created 0600 and keeps that mode across the rename.
        strata_oci::atomic_write(&self.path, &body).map_err(crate::io_err(&self.path))
    }
}

fn strip_url(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn run_helper(helper: &str, verb: &str, stdin: &[u8]) -> Result<Vec<u8>, RegistryError> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(crate::context(format!("running {prog} {verb}")))?;
    if let Some(mut i) = child.stdin.take() {
        // A helper that exits early closes its stdin; its exit status says why.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(crate::context(format!("running {prog} {verb}")))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(RegistryError::CredentialHelper {
            helper: prog,
            message: format!("{} {}", msg.trim(), err.trim()).trim().to_owned(),
        });
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>, RegistryError> {
    match run_helper(helper, "get", key.as_bytes()) {
        Ok(out) => {
            let v: Value = serde_json::from_slice(&out)
                .map_err(crate::context(format!("docker-credential-{helper} get")))?;
            let username = v["Username"].as_str().unwrap_or_default().to_owned();
            let password = v["Secret"].as_str().unwrap_or_default().to_owned();
            if username.is_empty() && password.is_empty() {
                return Ok(None);
            }
            Ok(Some(Credentials { username, password }))
        }
        // The protocol's "not found" is an error exit with this message.
        Err(RegistryError::CredentialHelper { message, .. })
            if message.contains("credentials not found") =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lower-case scheme: `basic` or `bearer`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth",service="reg",scope="repository:a:pull"`
/// (RFC 7235 auth-params; quoted strings may contain commas and `\"`).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.split_once(char::is_whitespace) {
        Some((s, r)) => (s, r.trim()),
        None => (header, ""),
    };
    if scheme.is_empty() {
        return None;
    }
    let mut params = BTreeMap::new();
    let b = rest.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == b',' || b[i].is_ascii_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        let key = rest[ks..i].trim().to_ascii_lowercase();
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                let ch = rest[i..].chars().next()?;
                val.push(ch);
                i += ch.len_utf8();
            }
            i += 1;
        } else {
            let vs = i;
            while i < b.len() && b[i] != b',' {
                i += 1;
            }
            val = rest[vs..i].trim().to_owned();
        }
        if !key.is_empty() {
            params.insert(key, val);
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/a:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/a:pull,push");
    }

    #[test]
    fn basic_challenge() {
        let c = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }

    #[test]
    fn config_round_trip_and_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        fs_err::write(
            &path,
            r#"{"auths":{"https://q.io/v1/":{"auth":"dTpw"},"r.io":{"username":"a","password":"b"}},"other":1}"#,
        )
        .unwrap();
        let mut c = DockerConfig::load_from(path.clone()).unwrap();
        let q = c.credentials("q.io").unwrap().unwrap();
        assert_eq!((q.username.as_str(), q.password.as_str()), ("u", "p"));
        assert_eq!(c.credentials("r.io").unwrap().unwrap().username, "a");
        assert_eq!(c.credentials("s.io").unwrap(), None);
        let creds = Credentials {
            username: "me".into(),
            password: "pw:with:colons".into(),
        };
        c.store("docker.io", &creds).unwrap();
        let again = DockerConfig::load_from(path.clone()).unwrap();
        assert_eq!(again.credentials("docker.io").unwrap(), Some(creds));
        // Unknown keys survive a rewrite.
        let raw: Value = serde_json::from_slice(&fs_err::read(&path).unwrap()).unwrap();
        assert_eq!(raw["other"], 1);
        assert!(raw["auths"][DOCKER_HUB_CONFIG_KEY]["auth"].is_string());
        let mut again = again;
        assert!(again.erase("q.io").unwrap());
        assert!(!again.erase("q.io").unwrap());
        assert_eq!(
            DockerConfig::load_from(path)
                .unwrap()
                .credentials("q.io")
                .unwrap(),
            None
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
