//! Ctrl-C (SIGINT) during `strata build` with the real binary: the running
//! step is cancelled, nothing of it is left (processes, scratch, its
//! cgroup), strata prints `cancelled` and exits 130 (issue #14).

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

/// Where strata makes step cgroups on this machine (`strata` under the
/// cgroup2 mount), when it does.
fn step_cgroup_parent() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4))?
    })?;
    Some(Path::new(mount).join("strata"))
}

/// The step cgroups that strata process `pid` made and that are still there.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let Some(parent) = step_cgroup_parent() else {
        return Vec::new();
    };
    entries_named(&parent, &format!("{pid}-"))
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
    let left = cgroups_of(child.id());
    assert!(left.is_empty(), "the step's cgroup is removed: {left:?}");
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

/// Starts `strata build` of `ctx` and SIGKILLs it once its step's command
/// `mark` runs; waits until the step is gone too.
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
    // The command itself, not the shell whose command line also holds it:
    // what comes before it in the step has finished.
    while !processes_with(mark).iter().any(|c| c.trim() == mark) {
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

    // Killed again: `system prune` removes it and counts it.
    kill_build_mid_step(&root, &ctx, &mark);
    let (ok, out, err) = strata_at(&root, &["system", "prune", "-f"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("Removed stale scratch: 1 entries (2."),
        "{out}"
    );
    assert!(!out.contains("Total reclaimed space: 0B"), "{out}");
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

/// xorshift64*: a seeded, printed sequence of kill points, so a failing run
/// can be replayed with STRATA_CRASH_SEED.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// 50 SIGKILLs and 20 SIGINTs, in a seeded random order, at random points
/// (0 to an undisturbed build's duration) of builds with COPY, RUN and a
/// cache mount on one store. Afterwards `check` finds no problem, the next
/// build leaves no scratch, nothing is mounted under the store and no step
/// process is left, and a rebuild gives the undisturbed build's image ID.
#[test]
#[expect(
    clippy::print_stdout,
    reason = "the seed and the timing are printed so a failure can be replayed"
)]
fn crash_test_kills_and_interrupts_builds_at_random_points() {
    let test = "crash_test_kills_and_interrupts_builds_at_random_points";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(tar) = strata_testutil::busybox_tar(test) else {
        return;
    };
    let seed = std::env::var("STRATA_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    println!("crash test seed: {seed} (STRATA_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(ctx.join("data"), &data).expect("data");
    let mark = format!("crash-mark-{}", std::process::id());
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM strata-test/busybox\n\
             COPY data /data\n\
             RUN --mount=type=cache,target=/cache sh -c 'cat /data >> /cache/log; cp /data /out; sleep 0.3; : {mark}'\n\
             RUN head -c 100000 /data > /out2 && sleep 0.2 && : {mark}\n"
        ),
    )
    .expect("Dockerfile");
    let build = |root: &Path, extra: &[&str]| -> std::process::Child {
        Command::new(strata())
            .args(["build", "-q", "--network", "none", "--no-cache"])
            .args(extra)
            .arg(&ctx)
            .env("STRATA_ROOT", root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata build")
    };
    let image_id = |root: &Path| -> (String, Duration) {
        let started = Instant::now();
        let out = build(root, &[]).wait_with_output().expect("build");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            started.elapsed(),
        )
    };

    // The undisturbed build, twice: the first unpacks the base, the second
    // gives the usual duration of a build, over which the kill points are
    // spread, and shows the ID is reproducible at all.
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
    let (expected, _) = image_id(&root);
    assert!(expected.starts_with("sha256:"), "{expected}");
    let (again, took) = image_id(&root);
    assert_eq!(again, expected, "an undisturbed rebuild");
    println!("an undisturbed build takes {took:?}");
    let mut signals: Vec<bool> = std::iter::repeat_n(true, 50)
        .chain(std::iter::repeat_n(false, 20))
        .collect();
    // Fisher-Yates with the seeded generator: true = SIGKILL, false = SIGINT.
    for i in (1..signals.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        signals.swap(i, j);
    }
    let span = took.as_millis().max(1) as u64;
    let mut finished_first = 0;
    let mut pids = Vec::new();
    for kill in signals {
        let delay = Duration::from_millis(rng.next() % span);
        let mut child = build(&root, &[]);
        pids.push(child.id());
        std::thread::sleep(delay);
        if child.try_wait().expect("try_wait").is_some() {
            finished_first += 1;
            continue;
        }
        if kill {
            let _ = child.kill();
        } else {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("seed {seed}: strata did not stop within 30 s of SIGINT");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!("{finished_first} of 70 builds finished before their signal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !processes_with(&mark).is_empty() {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: step processes left: {:?}",
            processes_with(&mark)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let (ok, out, err) = strata_at(&root, &["check"]);
    assert!(
        ok && out.contains(" 0 problem(s)"),
        "seed {seed}: {out}{err}"
    );
    let (id, _) = image_id(&root);
    assert_eq!(id, expected, "seed {seed}: the rebuild's image ID");
    let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        left.is_empty(),
        "seed {seed}: scratch left after the next build: {left:?}"
    );
    // What the SIGINTed builds made they removed; what the SIGKILLed ones
    // left, the next build did.
    let left: Vec<_> = pids.iter().flat_map(|p| cgroups_of(*p)).collect();
    assert!(
        left.is_empty(),
        "seed {seed}: step cgroups left after the next build: {left:?}"
    );
    assert!(
        mounts_under(&root).is_empty(),
        "seed {seed}: {:?}",
        mounts_under(&root)
    );
    let (ok, out, err) = strata_at(&root, &["check"]);
    assert!(
        ok && out.contains(" 0 problem(s)") && !out.contains("stale scratch"),
        "seed {seed}: {out}{err}"
    );
}
