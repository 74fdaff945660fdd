//! Ctrl-C (SIGINT) during `strata build` with the real binary: the running
//! step is cancelled, nothing of it is left (processes, scratch), strata
//! prints `cancelled` and exits 130 (issue #14).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

/// Processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// Every entry under `dir` whose name starts with `prefix`.
fn entries_named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix) {
            found.push(e.path());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(entries_named(&e.path(), prefix));
        }
    }
    found
}

#[test]
fn sigint_cancels_the_build() {
    let test = "sigint_cancels_the_build";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(tar) = strata_testutil::busybox_tar(test) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let out = Command::new(strata())
        .args([
            "import",
            &tar.to_string_lossy(),
            "strata-test/busybox:latest",
        ])
        .env("STRATA_ROOT", &root)
        .output()
        .expect("import");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("context");
    // Unique per process, so a leftover is ours.
    let mark = format!("sleep {}", 6_000_000 + std::process::id());
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM strata-test/busybox\nRUN echo step-started && {mark}\n"),
    )
    .expect("Dockerfile");

    let mut child = Command::new(strata())
        .args(["build", "--progress", "plain", "--network", "none"])
        .arg(&ctx)
        .env("STRATA_ROOT", &root)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata build");
    let pid = child.id().to_string();
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.contains("step-started")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) => seen.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("the step never started:\n{}", seen.join("\n"));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while processes_with(&mark).is_empty() {
        assert!(Instant::now() < deadline, "the step's sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    }

    // What a terminal's Ctrl-C sends (to strata's process group; the step
    // helpers have groups of their own).
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill -INT");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("strata did not stop within 30 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = reader.join();
    seen.extend(rx.try_iter());
    let text = seen.join("\n");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        (status.code(), status.signal()),
        (Some(130), None),
        "exit 130, not killed by the signal:\n{text}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("cancelled"), "{text}");
    assert!(
        processes_with(&mark).is_empty(),
        "{:?}",
        processes_with(&mark)
    );
    let left = entries_named(&root.join("tmp"), "step-");
    assert!(left.is_empty(), "the step's scratch is removed: {left:?}");
}

/// Runs `strata ARGS` on the store at `root`; returns (success, stdout, stderr).
fn strata_at(root: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(strata())
        .args(args)
        .env("STRATA_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .expect("spawn strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Lines of this process's mount table naming a path under `root`.
fn mounts_under(root: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let root = root.to_string_lossy().into_owned();
    table
        .lines()
        .filter(|l| l.contains(&root))
        .map(str::to_owned)
        .collect()
}

/// Starts `strata build` of `ctx` and SIGKILLs it once its step (a process
/// whose command line holds `mark`) runs; waits until the step is gone too.
fn kill_build_mid_step(root: &Path, ctx: &Path, mark: &str) {
    let mut child = Command::new(strata())
        .args(["build", "--progress", "plain", "--network", "none"])
        .arg(ctx)
        .env("STRATA_ROOT", root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata build");
    let deadline = Instant::now() + Duration::from_secs(60);
    while processes_with(mark).is_empty() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("the step never started");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL strata");
    let _ = child.wait();
    // The helper and the step die with their parent (PDEATHSIG).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_with(mark).is_empty() {
        assert!(Instant::now() < deadline, "the step outlived strata");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_build_scratch_is_reported_and_removed() {
    let test = "killed_build_scratch_is_reported_and_removed";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(tar) = strata_testutil::busybox_tar(test) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let (ok, _, err) = strata_at(
        &root,
        &[
            "import",
            &tar.to_string_lossy(),
            "strata-test/busybox:latest",
        ],
    );
    assert!(ok, "{err}");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("context");
    let mark = format!("sleep {}", 7_000_000 + std::process::id());
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM strata-test/busybox\n\
             RUN dd if=/dev/urandom of=/big bs=64k count=32 2>/dev/null && {mark}\n"
        ),
    )
    .expect("Dockerfile");

    kill_build_mid_step(&root, &ctx, &mark);
    let left = entries_named(&root.join("tmp"), "build-");
    assert!(!left.is_empty(), "a killed build leaves its scratch");
    assert!(mounts_under(&root).is_empty(), "{:?}", mounts_under(&root));

    // `check` reports it (not as a problem), `system df` counts it.
    let (ok, out, err) = strata_at(&root, &["check"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 problem(s)"), "{out}");
    assert!(
        out.contains("stale scratch left by interrupted builds or runs: 1 build entry ("),
        "{out}"
    );
    let (ok, out, err) = strata_at(&root, &["system", "df", "--format", "json"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("\"Build Scratch\""))
        .unwrap_or_else(|| panic!("no Build Scratch row: {out}"));
    let row: serde_json::Value = serde_json::from_str(row).expect("json row");
    assert_eq!(row["TotalCount"], "1", "{row}");
    assert_eq!(row["Active"], "0", "{row}");
    assert_ne!(row["Reclaimable"], "0B", "the 2 MiB written: {row}");

    // `check --repair` says what it freed: the scratch, with its size.
    let (ok, out, err) = strata_at(&root, &["check", "--repair"]);
    assert!(ok, "{out}{err}");
    let freed = out
        .lines()
        .find(|l| l.starts_with("freed "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(freed.contains("scratch: 1 build entry 2."), "{freed}");
    assert!(entries_named(&root.join("tmp"), "build-").is_empty());

    // Killed again; the next build (any build) removes what it left.
    kill_build_mid_step(&root, &ctx, &mark);
    assert!(!entries_named(&root.join("tmp"), "build-").is_empty());
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).expect("context");
    std::fs::write(
        other.join("Dockerfile"),
        "FROM strata-test/busybox\nRUN echo done > /done\n",
    )
    .expect("Dockerfile");
    let (ok, _, err) = strata_at(
        &root,
        &["build", "--network", "none", "-q", &other.to_string_lossy()],
    );
    assert!(ok, "{err}");
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "stale scratch removed by the next build: {left:?}"
    );
    let (ok, out, _) = strata_at(&root, &["check"]);
    assert!(ok && !out.contains("stale scratch"), "{out}");
}
