//! What a RUN step of `strata build` (the real binary) cannot reach: host
//! devices through mknod, and services on the host's 127.0.0.1 unless the
//! build asks for the host's network (issue #14). The executor's own suite
//! (crates/strata-exec/tests/isolation.rs) checks the same and more, rootful
//! and rootless, on single steps.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

struct Store {
    tmp: tempfile::TempDir,
}

impl Store {
    /// A fresh store with the busybox fixture as `strata-test/busybox`.
    fn new(test: &str) -> Option<Store> {
        if !strata_testutil::require_root(test) {
            return None;
        }
        let tar = strata_testutil::busybox_tar(test)?;
        let store = Store {
            tmp: tempfile::tempdir().expect("tempdir"),
        };
        let out = store.strata(&[
            "import",
            &tar.to_string_lossy(),
            "strata-test/busybox:latest",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(store)
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(strata())
            .args(args)
            .env("STRATA_ROOT", self.tmp.path().join("store"))
            .output()
            .expect("run strata")
    }

    /// Builds a context holding `dockerfile` with `--no-cache` and `extra`.
    fn build(&self, name: &str, dockerfile: &str, extra: &[&str]) -> Output {
        let ctx = self.tmp.path().join(name);
        std::fs::create_dir_all(&ctx).expect("context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let mut args = vec!["build", "--progress", "plain", "--no-cache"];
        args.extend_from_slice(extra);
        let ctx = ctx.to_string_lossy().into_owned();
        args.push(&ctx);
        self.strata(&args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A block device the test process can open on the host.
fn host_block_device() -> Option<(String, u32, u32)> {
    for e in std::fs::read_dir("/sys/class/block").ok()?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
        let (maj, min) = dev.trim().split_once(':')?;
        if std::fs::File::open(Path::new("/dev").join(&name)).is_ok() {
            return Some((name, maj.parse().ok()?, min.parse().ok()?));
        }
    }
    None
}

#[test]
fn run_cannot_open_host_devices() {
    let Some(store) = Store::new("run_cannot_open_host_devices") else {
        return;
    };
    let Some((name, maj, min)) = host_block_device() else {
        strata_testutil::skip(
            "run_cannot_open_host_devices",
            "no block device the test can open",
        );
        return;
    };
    // The step: make the host's device node and read it.
    let out = store.build(
        "mknod",
        &format!(
            "FROM strata-test/busybox\nRUN mknod /tmp/blk b {maj} {min} && dd if=/tmp/blk of=/dev/null bs=4096 count=1\n"
        ),
        &[],
    );
    assert!(
        !out.status.success(),
        "reading host device {name} ({maj}:{min}) from RUN succeeded:\n{}",
        stderr(&out)
    );
    // The devices a step is given still work.
    let out = store.build(
        "devnull",
        "FROM strata-test/busybox\nRUN echo x > /dev/null && head -c 4 /dev/urandom | wc -c && head -c 1 /dev/zero | wc -c\n",
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Answers every connection on the host's 127.0.0.1 with `host-secret`.
fn host_loopback_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret");
        }
    });
    port
}

#[test]
fn run_reaches_host_loopback_only_with_network_host() {
    let test = "run_reaches_host_loopback_only_with_network_host";
    let Some(store) = Store::new(test) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|d| d.join("pasta").is_file()) {
        strata_testutil::skip(
            test,
            "pasta is not installed: the default network is the host's",
        );
        return;
    }
    let port = host_loopback_service();
    let dockerfile = format!(
        "FROM strata-test/busybox\n\
         RUN printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {port} | grep -q host-secret\n"
    );
    let out = store.build("default", &dockerfile, &[]);
    assert!(
        !out.status.success(),
        "the default network reached the host's 127.0.0.1:{port}:\n{}",
        stderr(&out)
    );
    let out = store.build("host", &dockerfile, &["--network", "host"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // RUN --network=host is the same opt-in, per step.
    let per_step = dockerfile.replace("RUN ", "RUN --network=host ");
    let out = store.build("host-step", &per_step, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}
