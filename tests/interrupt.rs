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
