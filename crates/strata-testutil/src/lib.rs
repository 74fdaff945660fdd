//! Test-only helpers shared by every crate's tests.
//!
//! `cargo xtask test` prepares fixtures (base image rootfs tars) and starts
//! services (dockerd, registries) and passes them to the tests through
//! environment variables. A test that needs one calls the matching function
//! here: where the variable is absent the test is skipped with a loud message,
//! unless `STRATA_TEST_REQUIRE=1` (set by CI), where a skip is a failure.
//!
//! | variable | what |
//! |---|---|
//! | `STRATA_TEST_BUSYBOX_TAR` | rootfs tar of a busybox-static image (`/bin/sh` and applets) |
//! | `STRATA_TEST_DEBIAN_TAR` | rootfs tar of `debootstrap --variant=minbase` |
//! | `STRATA_TEST_DOCKER_HOST` | `unix://...` socket of a test dockerd (use `/usr/bin/docker`) |
//! | `STRATA_TEST_REFERENCE_DOCKER_HOST` | `unix://...` socket of the reference builder, dockerd 28.5 with BuildKit 0.25 (use `/usr/local/bin/docker buildx build --load --network none`) |
//! | `STRATA_TEST_REGISTRY` | `127.0.0.1:PORT` of a plain-HTTP registry |
//! | `STRATA_TEST_REGISTRY_TLS` | `127.0.0.1:PORT` of a TLS + htpasswd registry |
//! | `STRATA_TEST_REGISTRY_CA` | PEM CA certificate for the TLS registry |
//! | `STRATA_TEST_REGISTRY_USER` / `_PASSWORD` | its Basic auth credentials |
//! | `STRATA_TEST_USER` | name of an unprivileged user for rootless tests |

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether skipping is forbidden (CI provides everything).
pub fn skips_forbidden() -> bool {
    std::env::var("STRATA_TEST_REQUIRE").is_ok_and(|v| v == "1")
}

/// Reports a skip: prints the reason, or panics when skips are forbidden.
pub fn skip(test: &str, reason: &str) {
    if skips_forbidden() {
        panic!("{test}: cannot run: {reason} (STRATA_TEST_REQUIRE=1 forbids skipping)");
    }
    // Written to the process's stderr directly, not through `eprintln!`: the
    // test harness captures the print macros of a passing test and would
    // swallow the one line that says the test did not really run.
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n*** SKIPPED {test}: {reason} (run through `cargo xtask test` to provide it)\n"
    );
}

/// The value of a fixture/service variable, or a loud skip.
pub fn env_or_skip(test: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            skip(test, &format!("{var} is not set"));
            None
        }
    }
}

pub fn busybox_tar(test: &str) -> Option<PathBuf> {
    env_or_skip(test, "STRATA_TEST_BUSYBOX_TAR").map(PathBuf::from)
}

pub fn debian_tar(test: &str) -> Option<PathBuf> {
    env_or_skip(test, "STRATA_TEST_DEBIAN_TAR").map(PathBuf::from)
}

/// `DOCKER_HOST` value for the test dockerd.
pub fn docker_host(test: &str) -> Option<String> {
    env_or_skip(test, "STRATA_TEST_DOCKER_HOST")
}

/// `DOCKER_HOST` value for the reference builder: dockerd 28.5 with BuildKit
/// 0.25 and buildx 0.29 (`../shared/tools/reference-docker.sh`, started by
/// `.ci/testenv up`). Build with `docker buildx build --load --network none`.
pub fn reference_docker_host(test: &str) -> Option<String> {
    env_or_skip(test, "STRATA_TEST_REFERENCE_DOCKER_HOST")
}

pub fn registry(test: &str) -> Option<String> {
    env_or_skip(test, "STRATA_TEST_REGISTRY")
}

/// Whether this process runs as root (needed for rootful namespaces and mounts).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// True when running as root; otherwise a loud skip.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        true
    } else {
        skip(test, "needs root");
        false
    }
}

/// The unprivileged user for rootless tests.
pub fn test_user(test: &str) -> Option<String> {
    env_or_skip(test, "STRATA_TEST_USER")
}

/// The `strata` binary the end-to-end tests drive: `STRATA_TEST_BIN` when
/// set (another build of it), else `built`, which a test of the binary's
/// own package passes as `env!("CARGO_BIN_EXE_strata")` (only it can name
/// that).
pub fn strata_bin(built: &str) -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(built))
}

/// What a finished command wrote to stderr, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Serves `body` to every request on 127.0.0.1 until the test process
/// ends, as a plain HTTP/1.1 200 with `Connection: close`; returns the
/// `HOST:PORT` it listens on.
pub fn serve_forever(body: Vec<u8>) -> String {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&body);
        }
    });
    addr
}

/// A fresh store with the busybox fixture imported as
/// `strata-test/busybox:latest`, and a work directory beside it, for tests
/// that drive the `strata` binary. Both go with the value.
pub struct ImportedStore {
    _tmp: tempfile::TempDir,
    strata: PathBuf,
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl ImportedStore {
    /// `None` (the test skipped, loudly) without root or the fixture.
    /// `strata` is the binary under test (`env!("CARGO_BIN_EXE_strata")`).
    pub fn new(test: &str, strata: &Path) -> Option<Self> {
        if !require_root(test) {
            return None;
        }
        let tar = busybox_tar(test)?;
        let tmp = tempfile::tempdir().unwrap();
        let store = ImportedStore {
            strata: strata.to_owned(),
            root: tmp.path().join("store"),
            dir: tmp.path().join("work"),
            _tmp: tmp,
        };
        std::fs::create_dir_all(&store.dir).unwrap();
        let out = store.output(&[
            "import",
            tar.to_str().unwrap(),
            "strata-test/busybox:latest",
        ]);
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(store)
    }

    /// `strata ARGS` on this store, in the work directory, with a fixed
    /// `SOURCE_DATE_EPOCH` so image IDs are comparable across runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.strata);
        c.args(args)
            .env("STRATA_ROOT", &self.root)
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .current_dir(&self.dir);
        c
    }

    /// [`ImportedStore::command`], run to completion.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}
