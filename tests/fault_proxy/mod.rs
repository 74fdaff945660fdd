//! A small HTTP/1.1 proxy in front of a real registry that injects faults:
//! truncated blob bodies (a connection dropped mid-layer), corrupted blob
//! bytes, 503s, and a Bearer token service of its own. Everything that is not
//! tampered with is forwarded byte for byte, so the registry behind it does
//! the real work. Every request is logged for the test to inspect.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything unchanged (only log).
    Log,
    /// The first full GET of a large blob (> 64 KiB) sends half of it and
    /// closes the connection.
    TruncateOnce,
    /// Every GET of a large blob sends half of what it would and closes.
    TruncateAlways,
    /// Every GET of a large blob has one byte flipped in the middle.
    Corrupt,
    /// The first request for each manifest is answered 503.
    Unavailable,
    /// Requests under /v2/ need `Authorization: Bearer <token>`, which
    /// `/token` hands out for Basic `user:password`.
    Bearer {
        user: &'static str,
        password: &'static str,
    },
}

pub struct Proxy {
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}

impl Proxy {
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

const TOKEN: &str = "proxy-issued-token";

pub fn start(upstream: &str, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let state = Arc::new(State {
        upstream: upstream.to_owned(),
        fault,
        addr: addr.clone(),
        log: log.clone(),
        truncated: AtomicBool::new(false),
        unavailable: Mutex::new(Vec::new()),
        served: AtomicUsize::new(0),
    });
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let st = state.clone();
            std::thread::spawn(move || {
                let _ = st.serve(conn);
            });
        }
    });
    Proxy { addr, log, stop }
}

struct State {
    upstream: String,
    fault: Fault,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    truncated: AtomicBool,
    unavailable: Mutex<Vec<String>>,
    served: AtomicUsize,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let mut req = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if let Some(n) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn respond(out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(body);
}

impl State {
    fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut out = conn;
        // One request per connection: we answer `Connection: close`.
        let Some(req) = read_request(&mut reader)? else {
            return Ok(());
        };
        self.log.lock().unwrap().push(format!(
            "{} {} range={}",
            req.method,
            req.path,
            req.header("range").unwrap_or("-")
        ));
        if let Fault::Bearer { user, password } = self.fault {
            if req.path.starts_with("/token") {
                let want = format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{password}").as_bytes())
                );
                if req.header("authorization") == Some(want.as_str()) {
                    let body = format!("{{\"token\":\"{TOKEN}\"}}");
                    respond(
                        &mut out,
                        "200 OK",
                        &[("Content-Type", "application/json".into())],
                        body.as_bytes(),
                    );
                } else {
                    respond(
                        &mut out,
                        "401 Unauthorized",
                        &[],
                        b"{\"details\":\"bad credentials\"}",
                    );
                }
                return Ok(());
            }
            if req.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
                let challenge = format!(
                    "Bearer realm=\"http://{}/token\",service=\"fault-proxy\"",
                    self.addr
                );
                respond(
                    &mut out,
                    "401 Unauthorized",
                    &[("WWW-Authenticate", challenge), ("Content-Type", "application/json".into())],
                    b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}",
                );
                return Ok(());
            }
        }
        if self.fault == Fault::Unavailable && req.path.contains("/manifests/") {
            let mut seen = self.unavailable.lock().unwrap();
            if !seen.contains(&req.path) {
                seen.push(req.path.clone());
                respond(
                    &mut out,
                    "503 Service Unavailable",
                    &[("Retry-After", "0".into())],
                    b"",
                );
                return Ok(());
            }
        }
        let (head, body) = self.forward(&req)?;
        let is_blob_get = req.method == "GET" && req.path.contains("/blobs/sha256:");
        let big = body.len() > 64 * 1024;
        match self.fault {
            Fault::TruncateOnce
                if is_blob_get
                    && big
                    && req.header("range").is_none()
                    && !self.truncated.swap(true, Ordering::SeqCst) =>
            {
                // Promise the whole body, send half, hang up.
                out.write_all(&head)?;
                out.write_all(&body[..body.len() / 2])?;
                out.flush()?;
                return Ok(());
            }
            Fault::TruncateAlways if is_blob_get && body.len() > 1024 => {
                out.write_all(&head)?;
                out.write_all(&body[..body.len() / 2])?;
                out.flush()?;
                return Ok(());
            }
            Fault::Corrupt if is_blob_get && big => {
                let mut body = body;
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
                out.write_all(&head)?;
                out.write_all(&body)?;
            }
            _ => {
                out.write_all(&head)?;
                out.write_all(&body)?;
            }
        }
        self.served.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Sends the request upstream (closing after it) and returns the
    /// response head (up to and including the blank line) and body.
    fn forward(&self, req: &Request) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
        let mut up = TcpStream::connect(&self.upstream)?;
        let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
        for (k, v) in &req.headers {
            let lk = k.to_ascii_lowercase();
            // Our own auth stops here; the registry behind is open.
            if lk == "connection"
                || (lk == "authorization" && matches!(self.fault, Fault::Bearer { .. }))
            {
                continue;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        up.write_all(head.as_bytes())?;
        up.write_all(&req.body)?;
        let mut raw = Vec::new();
        up.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(raw.len());
        let body = raw.split_off(split);
        Ok((raw, body))
    }
}

pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}
