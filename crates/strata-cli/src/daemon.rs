//! The Docker Engine API, as far as `build --load` needs it: find the daemon
//! the docker CLI would talk to, and stream an image archive into its
//! `POST /images/load` as it is written, with no temporary file.
//!
//! HTTP/1.1 over a unix socket (or plain TCP) is written by hand: the request
//! is one chunked POST and the answer a short JSON stream, and the HTTP
//! clients we already depend on (reqwest) cannot dial a unix socket. See
//! docs/decisions.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, plain HTTP.
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The daemon the docker CLI would use, in its order: `DOCKER_HOST`, then the
/// context named by `DOCKER_CONTEXT`, then `currentContext` of the CLI's
/// config.json, then the default socket. `env` reads environment variables
/// and `home` is `$HOME` (both injected so tests need not change the process
/// environment).
pub fn resolve_endpoint(
    env: &dyn Fn(&str) -> Option<String>,
    home: Option<&Path>,
) -> anyhow::Result<Endpoint> {
    if let Some(host) = env("DOCKER_HOST").filter(|h| !h.is_empty()) {
        if env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
            bail!(
                "DOCKER_HOST={host} with DOCKER_TLS_VERIFY: a TLS connection to the Docker daemon is not supported by --load; use a unix socket or `-o type=docker,dest=FILE` and `docker load`"
            );
        }
        return parse_host(&host).with_context(|| format!("DOCKER_HOST={host}"));
    }
    let config_dir = match env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match home {
            Some(h) => h.join(".docker"),
            None => return Ok(Endpoint::Unix(DEFAULT_SOCKET.into())),
        },
    };
    let context = match env("DOCKER_CONTEXT").filter(|c| !c.is_empty()) {
        Some(c) => Some(c),
        None => current_context(&config_dir)?,
    };
    match context.as_deref() {
        None | Some("default") => Ok(Endpoint::Unix(DEFAULT_SOCKET.into())),
        Some(name) => context_endpoint(&config_dir, name),
    }
}

fn current_context(config_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = config_dir.join("config.json");
    let text = match fs_err::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok(v.get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(str::to_owned))
}

/// A named context's docker endpoint, from
/// `contexts/meta/<sha256 of the name>/meta.json` as the CLI stores it.
fn context_endpoint(config_dir: &Path, name: &str) -> anyhow::Result<Endpoint> {
    let id = strata_oci::Digest::of(name.as_bytes()).hex();
    let meta = config_dir.join("contexts/meta").join(&id).join("meta.json");
    let text = fs_err::read_to_string(&meta)
        .with_context(|| format!("docker context {name:?} is not defined"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", meta.display()))?;
    let host = v
        .pointer("/Endpoints/docker/Host")
        .and_then(|h| h.as_str())
        .ok_or_else(|| {
            anyhow!(
                "docker context {name:?} has no docker endpoint ({})",
                meta.display()
            )
        })?;
    if config_dir
        .join("contexts/tls")
        .join(&id)
        .join("docker")
        .exists()
    {
        bail!(
            "docker context {name:?} connects with TLS, which --load does not support; use `-o type=docker,dest=FILE` and `docker load`"
        );
    }
    parse_host(host).with_context(|| format!("docker context {name:?}"))
}

fn parse_host(host: &str) -> anyhow::Result<Endpoint> {
    if let Some(path) = host.strip_prefix("unix://") {
        if path.is_empty() {
            bail!("a unix:// host needs a socket path");
        }
        return Ok(Endpoint::Unix(path.into()));
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        let addr = addr.trim_end_matches('/');
        if addr.is_empty() {
            bail!("a tcp:// host needs an address");
        }
        let addr = if addr
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            addr.to_owned()
        } else {
            format!("{addr}:2375")
        };
        return Ok(Endpoint::Tcp(addr));
    }
    let scheme = host.split_once("://").map_or(host, |(s, _)| s);
    bail!(
        "the {scheme:?} transport to the Docker daemon is not supported by --load (unix:// and tcp:// are)"
    )
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    Ok(match endpoint {
        Endpoint::Unix(p) => Box::new(UnixStream::connect(p)?),
        Endpoint::Tcp(a) => Box::new(std::net::TcpStream::connect(a)?),
    })
}

/// An HTTP/1.1 chunked request body: each buffer written becomes a chunk.
struct ChunkedBody<W: Write> {
    inner: W,
}

impl<W: Write> Write for ChunkedBody<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        write!(self.inner, "{:x}\r\n", buf.len())?;
        self.inner.write_all(buf)?;
        self.inner.write_all(b"\r\n")?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What the daemon said it loaded (`Loaded image: NAME` / `Loaded image ID: ID`).
#[derive(Debug)]
pub struct Loaded {
    pub messages: Vec<String>,
}

/// Streams the archive that `write_archive` writes into the daemon's
/// `POST /images/load`, then reads its answer. An error names the daemon and
/// carries the daemon's own message where it gave one (also when it refused
/// the stream half-way, which shows here as a broken pipe first).
pub fn load(
    endpoint: &Endpoint,
    write_archive: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<Loaded> {
    let stream = connect(endpoint)
        .with_context(|| format!("cannot connect to the Docker daemon at {endpoint}"))?;
    let mut reader = BufReader::new(stream);
    let head = "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: strata\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n\r\n";
    let sent = (|| -> anyhow::Result<()> {
        let conn = reader.get_mut();
        conn.write_all(head.as_bytes())?;
        // 1 MiB chunks: few chunk headers, and a bounded buffer.
        let mut body = std::io::BufWriter::with_capacity(1 << 20, ChunkedBody { inner: conn });
        write_archive(&mut body)?;
        let body = body.into_inner().map_err(|e| e.into_error())?;
        body.inner.write_all(b"0\r\n\r\n")?;
        body.inner.flush()?;
        Ok(())
    })();
    let answer = read_response(&mut reader);
    match (sent, answer) {
        (_, Ok((status, body))) if status >= 400 => {
            bail!(
                "the Docker daemon at {endpoint} refused the image: {}",
                error_text(&body)
            )
        }
        (Err(e), _) => Err(e.context(format!(
            "sending the image to the Docker daemon at {endpoint}"
        ))),
        (Ok(()), Err(e)) => Err(e.context(format!(
            "reading the answer of the Docker daemon at {endpoint}"
        ))),
        (Ok(()), Ok((_, body))) => parse_progress(&body)
            .map_err(|m| anyhow!("the Docker daemon at {endpoint} could not load the image: {m}")),
    }
}

/// The daemon's JSON stream: `{"stream": "..."}` lines, or an `error`.
fn parse_progress(body: &str) -> Result<Loaded, String> {
    let mut messages = Vec::new();
    for v in serde_json::Deserializer::from_str(body).into_iter::<serde_json::Value>() {
        let v = v.map_err(|e| format!("unreadable answer ({e}): {body}"))?;
        if let Some(err) = v.get("error").and_then(|e| e.as_str()) {
            return Err(err.to_owned());
        }
        if let Some(s) = v.get("stream").and_then(|s| s.as_str()) {
            let s = s.trim();
            if !s.is_empty() {
                messages.push(s.to_owned());
            }
        }
    }
    Ok(Loaded { messages })
}

/// An error body: `{"message": "..."}` as the API sends it, or the text.
fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.trim().to_owned())
}

/// Status code and body of an HTTP/1.1 response (chunked, sized or to EOF).
fn read_response(r: &mut impl BufRead) -> anyhow::Result<(u16, String)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {:?}", line.trim_end()))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("the connection closed inside the response headers");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k.eq_ignore_ascii_case("content-length") {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size_text = line.trim_end().split(';').next().unwrap_or("");
            let size = u64::from_str_radix(size_text, 16)
                .map_err(|_| anyhow!("bad chunk size {:?} in the response", line.trim_end()))?;
            if size == 0 {
                break;
            }
            r.by_ref().take(size).read_to_end(&mut body)?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        r.by_ref().take(n).read_to_end(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn docker_host_wins_and_is_parsed() {
        let e = resolve_endpoint(&env_of(&[("DOCKER_HOST", "unix:///run/d.sock")]), None).unwrap();
        assert_eq!(e, Endpoint::Unix("/run/d.sock".into()));
        let e = resolve_endpoint(&env_of(&[("DOCKER_HOST", "tcp://10.0.0.1")]), None).unwrap();
        assert_eq!(e, Endpoint::Tcp("10.0.0.1:2375".into()));
        let err = resolve_endpoint(&env_of(&[("DOCKER_HOST", "ssh://me@box")]), None).unwrap_err();
        assert!(format!("{err:#}").contains("\"ssh\" transport"), "{err:#}");
        let err = resolve_endpoint(
            &env_of(&[("DOCKER_HOST", "tcp://h:2376"), ("DOCKER_TLS_VERIFY", "1")]),
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("TLS"), "{err:#}");
    }

    #[test]
    fn contexts_are_read_as_the_cli_stores_them() {
        let home = tempfile::tempdir().unwrap();
        let cfg = home.path().join(".docker");
        // No config at all: the default socket.
        let e = resolve_endpoint(&env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(e, Endpoint::Unix(DEFAULT_SOCKET.into()));
        let id = strata_oci::Digest::of(b"remote").hex();
        fs_err::create_dir_all(cfg.join("contexts/meta").join(&id)).unwrap();
        fs_err::write(
            cfg.join("contexts/meta").join(&id).join("meta.json"),
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"unix:///srv/docker.sock","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        fs_err::write(
            cfg.join("config.json"),
            r#"{"auths":{},"currentContext":"remote"}"#,
        )
        .unwrap();
        let e = resolve_endpoint(&env_of(&[]), Some(home.path())).unwrap();
        assert_eq!(e, Endpoint::Unix("/srv/docker.sock".into()));
        // DOCKER_CONTEXT names another one; "default" is the default socket.
        let e =
            resolve_endpoint(&env_of(&[("DOCKER_CONTEXT", "default")]), Some(home.path())).unwrap();
        assert_eq!(e, Endpoint::Unix(DEFAULT_SOCKET.into()));
        let err = resolve_endpoint(&env_of(&[("DOCKER_CONTEXT", "nope")]), Some(home.path()))
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("\"nope\" is not defined"),
            "{err:#}"
        );
        // DOCKER_HOST beats the current context, as in the docker CLI.
        let e =
            resolve_endpoint(&env_of(&[("DOCKER_HOST", "unix:///x")]), Some(home.path())).unwrap();
        assert_eq!(e, Endpoint::Unix("/x".into()));
    }

    #[test]
    fn responses_are_read_chunked_or_sized() {
        let chunked = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1e\r\n{\"stream\":\"Loaded image: a:1\\n\r\n3\r\n\"}\n\r\n0\r\n\r\n";
        let (status, body) = read_response(&mut chunked.as_bytes()).unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            parse_progress(&body).unwrap().messages,
            ["Loaded image: a:1"]
        );
        let sized = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 20\r\n\r\n{\"message\":\"no way\"}";
        let (status, body) = read_response(&mut sized.as_bytes()).unwrap();
        assert_eq!((status, error_text(&body).as_str()), (500, "no way"));
        let failed = r#"{"errorDetail":{"message":"bad layer"},"error":"bad layer"}"#;
        assert_eq!(parse_progress(failed).unwrap_err(), "bad layer");
    }

    #[test]
    fn a_chunked_body_frames_each_write() {
        let mut out = Vec::new();
        ChunkedBody { inner: &mut out }.write_all(b"hello").unwrap();
        assert_eq!(out, b"5\r\nhello\r\n");
    }
}
