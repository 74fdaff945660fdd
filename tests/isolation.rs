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

impl Store {
    /// `strata ARGS` on this store, with the pid it ran as (its step
    /// cgroups are named after it).
    fn strata_with_pid(&self, args: &[&str]) -> (u32, Output) {
        let child = Command::new(strata())
            .args(args)
            .env("STRATA_ROOT", self.tmp.path().join("store"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn strata");
        let pid = child.id();
        (pid, child.wait_with_output().expect("wait for strata"))
    }

    /// `strata build --progress plain --no-cache EXTRA CTX` of `dockerfile`.
    fn build_with_pid(&self, name: &str, dockerfile: &str, extra: &[&str]) -> (u32, Output) {
        let ctx = self.tmp.path().join(name);
        std::fs::create_dir_all(&ctx).expect("context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let ctx = ctx.to_string_lossy().into_owned();
        let mut args = vec!["build", "--progress", "plain", "--no-cache"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        self.strata_with_pid(&args)
    }

    /// Where this machine puts step cgroups, from what `--isolation auto`
    /// reports on the progress output; a loud skip where steps get none
    /// (rootless, a read-only cgroupfs).
    fn step_cgroups(&self, test: &str) -> Option<PathBuf> {
        let out = self.build("report", "FROM strata-test/busybox\nRUN true\n", &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stderr(&out);
        let line = text
            .lines()
            .find(|l| l.starts_with("isolation: "))
            .unwrap_or_else(|| panic!("no isolation line in the progress output:\n{text}"));
        match line
            .split_once("devices: a cgroup per step under ")
            .and_then(|(_, rest)| rest.split_once(" with runc's device allow list"))
        {
            Some((parent, _)) => Some(PathBuf::from(parent)),
            None => {
                assert!(line.contains("devices: no cgroup per step ("), "{line}");
                strata_testutil::skip(test, line);
                None
            }
        }
    }
}

/// The step cgroups of strata process `pid` still under `parent`.
fn cgroups_of(parent: &Path, pid: u32) -> Vec<String> {
    std::fs::read_dir(parent)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{pid}-")))
                .collect()
        })
        .unwrap_or_default()
}

/// Processes whose command line is exactly `cmdline` (NULs as spaces).
fn processes_running(cmdline: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let c = std::fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            (c.trim() == cmdline).then(|| format!("{}: {c}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// A RUN step runs in strata's step cgroup (its /proc/self/cgroup says
/// so), and once the step is over, on success and on failure, with either
/// isolation, nothing it started is left (not even a `setsid` daemon, which
/// leaves the process group a chroot step was killed by) and neither is the
/// cgroup. Cancelling is in tests/interrupt.rs.
#[test]
fn run_steps_get_a_cgroup_that_ends_with_them() {
    let test = "run_steps_get_a_cgroup_that_ends_with_them";
    let Some(store) = Store::new(test) else {
        return;
    };
    let Some(parent) = store.step_cgroups(test) else {
        return;
    };
    let cases = [
        ("namespaces", "&& echo ok", true),
        ("namespaces", "&& false", false),
        ("chroot", "&& echo ok", true),
        ("chroot", "&& false", false),
    ];
    for (i, (isolation, end, succeeds)) in cases.into_iter().enumerate() {
        let sleep = format!("sleep {}", 7_000_000 + 10 * std::process::id() + i as u32);
        // chroot steps have no live /proc to read their cgroup from.
        let show = if isolation == "namespaces" {
            "grep '^0::' /proc/self/cgroup && "
        } else {
            ""
        };
        let dockerfile = format!(
            "FROM strata-test/busybox\n\
             RUN {show}(setsid {sleep} >/dev/null 2>&1 </dev/null &) {end}\n"
        );
        let (pid, out) =
            store.build_with_pid(&format!("bg-{i}"), &dockerfile, &["--isolation", isolation]);
        let text = stderr(&out);
        assert_eq!(out.status.success(), succeeds, "{isolation}: {text}");
        if isolation == "namespaces" {
            let want = format!("0::/strata/{pid}-ns");
            assert!(
                text.lines()
                    .any(|l| l.contains(&want) && l.contains("-step-")),
                "{isolation}: no {want}…-step-… in:\n{text}"
            );
        }
        let left = processes_running(&sleep);
        assert!(
            left.is_empty(),
            "{isolation} {end}: {left:?} outlived its step"
        );
        let left = cgroups_of(&parent, pid);
        assert!(left.is_empty(), "{isolation} {end}: cgroups left: {left:?}");
    }
}

/// `strata run`'s container is a step like RUN's: it runs in a step cgroup,
/// what it backgrounds dies with it, and the cgroup goes.
#[test]
fn strata_run_gets_a_cgroup_that_ends_with_it() {
    let test = "strata_run_gets_a_cgroup_that_ends_with_it";
    let Some(store) = Store::new(test) else {
        return;
    };
    let Some(parent) = store.step_cgroups(test) else {
        return;
    };
    let sleep = format!("sleep {}", 8_000_000 + std::process::id());
    let script = format!(
        "grep '^0::' /proc/self/cgroup; (setsid {sleep} >/dev/null 2>&1 </dev/null &); \
         mknod /tmp/kmsg c 1 11 && (exec 3< /tmp/kmsg) 2>/dev/null && echo OPENED; echo done"
    );
    let (pid, out) = store.strata_with_pid(&[
        "run",
        "--rm",
        "--network",
        "none",
        "strata-test/busybox",
        "sh",
        "-c",
        &script,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    assert!(
        stdout.starts_with(&format!("0::/strata/{pid}-ns"))
            && stdout.lines().next().is_some_and(|l| l.contains("-step-"))
            && stdout.ends_with("\ndone\n"),
        "{stdout}"
    );
    let left = processes_running(&sleep);
    assert!(left.is_empty(), "{left:?} outlived the container");
    let left = cgroups_of(&parent, pid);
    assert!(left.is_empty(), "cgroups left: {left:?}");
}
