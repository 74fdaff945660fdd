//! Several `strata` processes on one store, through the real binary on the
//! busybox fixture: builds run side by side (proven by a rendezvous, not by
//! timing), GC during a build frees none of its blobs, a killed build's
//! lease goes with the next GC, and a `save` racing `rmi` + `prune` either
//! writes a complete archive or says the image was removed meanwhile.
//!
//! Rendezvous: RUN steps share a cache mount (`id=rendezvous`, shared), the
//! one directory two builds on one store both see. Each step creates its
//! own file there and waits for the other's (or for one the test creates),
//! giving up after 60 s: builds that ran one after the other would fail
//! there, whatever the machine's speed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};

fn strata() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// The shared store set-up, plus this file's own helpers.
struct Env(strata_testutil::ImportedStore);

impl std::ops::Deref for Env {
    type Target = strata_testutil::ImportedStore;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Env {
    /// A fresh store with the busybox fixture imported.
    fn new(test: &str) -> Option<Self> {
        strata_testutil::ImportedStore::new(test, &strata()).map(Env)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A build context holding `dockerfile`.
    fn context(&self, name: &str, dockerfile: &str) -> PathBuf {
        let ctx = self.dir.join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        ctx
    }

    /// `strata build` started, its output collected when waited for.
    fn spawn_build(&self, tag: &str, ctx: &Path) -> Child {
        self.command(&[
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            ctx.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    }

    /// The rendezvous cache mount's directory on the host, once a step has
    /// made `file` in it (waiting up to 60 s for that).
    fn wait_for_rendezvous_file(&self, file: &str) -> PathBuf {
        let mounts = self.root.join("cache-mounts");
        for _ in 0..600 {
            if let Ok(entries) = std::fs::read_dir(&mounts) {
                for e in entries.flatten() {
                    if e.path().join(file).exists() {
                        return e.path();
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no RUN step made {file} in {}", mounts.display());
    }

    /// `strata check` finds no problem in the store.
    fn assert_consistent(&self) {
        let check = self.ok(&["check"]);
        assert!(check.contains(" 0 problem(s)"), "{check}");
    }

    fn lease_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.join("leases"))
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A RUN step that creates `mine` in the rendezvous directory and waits
/// for `theirs` there (exit 7 after 60 s).
fn rendezvous_step(mine: &str, theirs: &str) -> String {
    format!(
        "RUN --mount=type=cache,id=rendezvous,sharing=shared,target=/r \
         touch /r/{mine} && i=0 && while [ ! -e /r/{theirs} ]; do i=$((i+1)); \
         if [ $i -gt 600 ]; then echo 'rendezvous: no {theirs} after 60 s' >&2; exit 7; fi; \
         sleep 0.1; done\n"
    )
}

/// The layers the `[internal] unpacking N layer(s)` lines add up to.
fn layers_unpacked(progress: &str) -> usize {
    progress
        .lines()
        .filter_map(|l| l.split_once("[internal] unpacking ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

#[test]
fn two_builds_on_one_store_run_at_the_same_time() {
    let Some(env) = Env::new("two_builds_on_one_store_run_at_the_same_time") else {
        return;
    };
    // Different steps (different files), one base: each build's RUN can
    // only finish while the other's is running.
    let a = env.context(
        "a",
        &format!(
            "FROM strata-test/busybox:latest\nRUN echo a > /who\n{}",
            rendezvous_step("a", "b")
        ),
    );
    let b = env.context(
        "b",
        &format!(
            "FROM strata-test/busybox:latest\nRUN echo b > /who\n{}",
            rendezvous_step("b", "a")
        ),
    );
    let (ba, bb) = (env.spawn_build("a", &a), env.spawn_build("b", &b));
    let (oa, ob) = (
        ba.wait_with_output().unwrap(),
        bb.wait_with_output().unwrap(),
    );
    assert!(oa.status.success(), "build a: {}", stderr(&oa));
    assert!(ob.status.success(), "build b: {}", stderr(&ob));
    // Both needed the base's snapshot: it was unpacked once between them
    // (the busybox fixture is one layer).
    assert_eq!(
        layers_unpacked(&stderr(&oa)) + layers_unpacked(&stderr(&ob)),
        1,
        "a: {}\nb: {}",
        stderr(&oa),
        stderr(&ob)
    );
    assert_eq!(env.ok(&["run", "--rm", "a", "cat", "/who"]), "a\n");
    assert_eq!(env.ok(&["run", "--rm", "b", "cat", "/who"]), "b\n");
    env.assert_consistent();
    assert!(env.lease_files().is_empty(), "{:?}", env.lease_files());
}

#[test]
fn gc_during_a_build_frees_none_of_its_blobs() {
    let Some(env) = Env::new("gc_during_a_build_frees_none_of_its_blobs") else {
        return;
    };
    // The first RUN's layer is committed (blob, cache record) before the
    // second RUN waits; the test then removes every cache record and
    // collects garbage while the build is still running.
    let ctx = env.context(
        "ctx",
        &format!(
            "FROM strata-test/busybox:latest\n\
             RUN head -c 200000 /dev/urandom > /payload\n{}\
             RUN cat /payload > /copy\n",
            rendezvous_step("started", "go")
        ),
    );
    let build = env.spawn_build("inflight", &ctx);
    let rendezvous = env.wait_for_rendezvous_file("started");
    assert_eq!(env.lease_files().len(), 1, "the build holds one lease");
    env.ok(&["builder", "prune", "-a", "-f"]);
    env.ok(&["system", "prune", "-a", "-f"]);
    std::fs::write(rendezvous.join("go"), "").unwrap();
    let out = build.wait_with_output().unwrap();
    assert!(out.status.success(), "build: {}", stderr(&out));
    // The image is whole: every blob there (the base image it was built
    // on is gone, which `check` notes as a missing parent, nothing more),
    // and its files readable.
    let check = env.output(&["check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(!report.contains("missing or corrupt"), "{report}");
    assert!(report.contains(" 1 problem(s)"), "{report}");
    assert!(report.contains("parent"), "{report}");
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "inflight",
            "sh",
            "-c",
            "cmp /payload /copy && wc -c < /payload"
        ])
        .trim(),
        "200000"
    );
}

#[test]
fn a_killed_builds_lease_is_removed_by_the_next_gc() {
    let Some(env) = Env::new("a_killed_builds_lease_is_removed_by_the_next_gc") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        &format!(
            "FROM strata-test/busybox:latest\n\
             RUN head -c 100000 /dev/urandom > /payload\n{}",
            rendezvous_step("started", "never")
        ),
    );
    let mut build = env.spawn_build("killed", &ctx);
    env.wait_for_rendezvous_file("started");
    let leases = env.lease_files();
    assert_eq!(leases.len(), 1, "{leases:?}");
    build.kill().unwrap();
    build.wait().unwrap();
    // The file stays (nothing ran to remove it) but nobody holds it.
    assert!(leases[0].exists());
    env.ok(&["system", "prune", "-f"]);
    assert!(env.lease_files().is_empty(), "{:?}", env.lease_files());
    env.assert_consistent();
}

#[test]
fn a_save_racing_rmi_and_prune_writes_the_whole_image() {
    let Some(env) = Env::new("a_save_racing_rmi_and_prune_writes_the_whole_image") else {
        return;
    };
    // Three incompressible layers, each larger than a pipe's buffer: the
    // save blocks writing the first while the image is removed.
    let ctx = env.context(
        "ctx",
        "FROM strata-test/busybox:latest\n\
         RUN head -c 300000 /dev/urandom > /one\n\
         RUN head -c 300000 /dev/urandom > /two\n\
         RUN head -c 300000 /dev/urandom > /three\n",
    );
    let out = env.output(&["build", "-q", "-t", "victim", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let id = env
        .ok(&["images", "-q", "--no-trunc", "victim"])
        .trim()
        .to_owned();
    assert!(id.starts_with("sha256:"), "{id}");
    let mut save = env
        .command(&["save", "victim"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut archive = save.stdout.take().unwrap();
    // The first byte proves the save has leased the image and is writing;
    // nothing more is read, so it now blocks on the full pipe.
    let mut first = [0u8; 1];
    archive.read_exact(&mut first).unwrap();
    env.ok(&["rmi", "victim"]);
    env.ok(&["builder", "prune", "-a", "-f"]);
    env.ok(&["system", "prune", "-a", "-f"]);
    let mut rest = Vec::new();
    archive.read_to_end(&mut rest).unwrap();
    let out = save.wait_with_output().unwrap();
    assert!(out.status.success(), "save: {}", stderr(&out));
    let mut whole = first.to_vec();
    whole.extend(rest);
    let tar = env.dir.join("victim.tar");
    std::fs::write(&tar, &whole).unwrap();
    // The archive is complete: it loads back as the same image, and runs.
    let loaded = env.ok(&["load", "-i", tar.to_str().unwrap()]);
    assert!(loaded.contains("victim"), "{loaded}");
    assert_eq!(env.ok(&["images", "-q", "--no-trunc", "victim"]).trim(), id);
    assert_eq!(
        env.ok(&[
            "run",
            "--rm",
            "victim",
            "sh",
            "-c",
            "cat /one /two /three | wc -c"
        ])
        .trim(),
        "900000"
    );
    // With the save gone, its lease went too: nothing left but the store's.
    assert!(env.lease_files().is_empty(), "{:?}", env.lease_files());
}

/// `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig} {pid}");
}

/// Polls `cond` every millisecond for up to 120 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Runs a build (`meanwhile`, whose RUN writes /other) to its end while
/// `paused` is stopped (SIGSTOP) in the middle of its work; the build must
/// finish on its own, which it cannot if `paused` holds the store lock.
/// Bounded: after 90 s the paused process is resumed and the test fails.
/// See [`assert_meanwhile_runs`] for its image.
fn a_build_completes_while_paused(env: &Env, paused: u32) {
    let ctx = env.context(
        "other",
        "FROM strata-test/busybox:latest\nRUN echo other > /other\n",
    );
    let mut build = env.spawn_build("meanwhile", &ctx);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if build.try_wait().unwrap().is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            signal(paused, "CONT");
            let _ = build.kill();
            let out = build.wait_with_output().unwrap();
            panic!(
                "the build could not commit while the other process was paused: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = build.wait_with_output().unwrap();
    assert!(out.status.success(), "build: {}", stderr(&out));
}

/// The image [`a_build_completes_while_paused`] built runs: it was
/// committed whole.
fn assert_meanwhile_runs(env: &Env) {
    assert_eq!(
        env.ok(&["run", "--rm", "meanwhile", "cat", "/other"]),
        "other\n"
    );
}

/// Compressing a layer for shipping (here for `save`) runs outside the
/// store lock: while a `save` is stopped in the middle of compressing a
/// large layer, another build runs and commits its layer and image. The
/// save, resumed, writes a complete archive.
#[test]
fn a_build_commits_while_another_process_compresses_a_layer() {
    let Some(env) = Env::new("a_build_commits_while_another_process_compresses_a_layer") else {
        return;
    };
    // 48 MB of noise: seconds of gzip, one layer stored uncompressed.
    let big = env.context(
        "big",
        "FROM strata-test/busybox:latest\nRUN head -c 48000000 /dev/urandom > /noise\n",
    );
    let out = env.output(&["build", "-q", "-t", "big", big.to_str().unwrap()]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let archive = env.dir.join("big.tar");
    let save = env
        .command(&["save", "-o", archive.to_str().unwrap(), "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The compressed bytes going into a blob temp file (`.tmp-*`) mean
    // the save is compressing; it is stopped there.
    let blobs = env.root.join("blobs/sha256");
    let compressing = || {
        std::fs::read_dir(&blobs).unwrap().flatten().any(|e| {
            e.file_name().to_string_lossy().starts_with(".tmp-")
                && e.metadata().is_ok_and(|m| m.len() > 0)
        })
    };
    wait_until("the save compresses", compressing);
    signal(save.id(), "STOP");
    assert!(
        compressing(),
        "the save finished compressing before it was stopped"
    );
    a_build_completes_while_paused(&env, save.id());
    assert!(compressing(), "the save went on while stopped");
    signal(save.id(), "CONT");
    let out = save.wait_with_output().unwrap();
    assert!(out.status.success(), "save: {}", stderr(&out));
    // Whole: it loads back as the same image.
    let id = env.ok(&["images", "-q", "--no-trunc", "big"]);
    env.ok(&["rmi", "big"]);
    let loaded = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("big"), "{loaded}");
    assert_eq!(env.ok(&["images", "-q", "--no-trunc", "big"]), id);
    assert_meanwhile_runs(&env);
    env.assert_consistent();
}

/// The sweep of stale scratch at the start of a build deletes outside the
/// store lock: while a build is stopped in the middle of deleting a large
/// stale tree (a killed build's), another build runs and commits. Every
/// file of the stale tree is a hard link to one anchor file outside it, so
/// the anchor's link count shows how far the deletion got, wherever the
/// sweeper moved the tree.
#[test]
fn a_build_commits_while_another_sweeps_stale_scratch() {
    let Some(env) = Env::new("a_build_commits_while_another_sweeps_stale_scratch") else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    let tmp = env.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // A killed build's scratch: its directory and its (unheld) owner lock.
    let stale = tmp.join("build-killed0");
    std::fs::write(tmp.join("build-killed0.lock"), "").unwrap();
    // Several anchors: a filesystem caps one inode's links (ext4: 65,000).
    let anchors: Vec<PathBuf> = (0..4)
        .map(|i| env.root.join(format!("anchor{i}")))
        .collect();
    const LINKS: u64 = 100_000;
    for d in 0..100 {
        let anchor = &anchors[d % anchors.len()];
        if !anchor.exists() {
            std::fs::write(anchor, "x").unwrap();
        }
        let dir = stale.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..LINKS / 100 {
            std::fs::hard_link(anchor, dir.join(format!("f{f}"))).unwrap();
        }
    }
    // Links into the stale tree still there.
    let links = || -> u64 {
        anchors
            .iter()
            .map(|a| std::fs::metadata(a).unwrap().nlink() - 1)
            .sum()
    };
    assert_eq!(links(), LINKS);
    let first = env.context(
        "first",
        "FROM strata-test/busybox:latest\nRUN echo first > /first\n",
    );
    let sweeping = env.spawn_build("first", &first);
    wait_until("the sweep deletes", || links() <= LINKS - 100);
    signal(sweeping.id(), "STOP");
    assert!(links() > 0, "the sweep finished before it was stopped");
    a_build_completes_while_paused(&env, sweeping.id());
    signal(sweeping.id(), "CONT");
    let out = sweeping.wait_with_output().unwrap();
    assert!(out.status.success(), "build: {}", stderr(&out));
    assert_eq!(links(), 0, "the stale tree is gone");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_meanwhile_runs(&env);
    env.assert_consistent();
}

/// Compressing outside the store lock still compresses each layer once:
/// two exports of one image started together make its encoding between
/// them once (the second waits on the encoding's key lock and finds it),
/// and write the same bytes.
#[test]
fn two_exports_at_once_compress_a_layer_once() {
    let Some(env) = Env::new("two_exports_at_once_compress_a_layer_once") else {
        return;
    };
    let ctx = env.context(
        "ctx",
        "FROM strata-test/busybox:latest\nRUN head -c 20000000 /dev/urandom > /noise\n",
    );
    let out = env.output(&["build", "-q", "-t", "img", ctx.to_str().unwrap()]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    let export = |name: &str| {
        let dest = env.dir.join(name);
        let child = env
            .command(&[
                "build",
                "--progress",
                "plain",
                "-o",
                &format!("type=oci,dest={}", dest.display()),
                ctx.to_str().unwrap(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (child, dest)
    };
    let ((a, a_dest), (b, b_dest)) = (export("a.tar"), export("b.tar"));
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success(), "a: {}", stderr(&oa));
    assert!(ob.status.success(), "b: {}", stderr(&ob));
    let compressed = |progress: &str| -> usize {
        progress
            .lines()
            .filter_map(|l| l.split_once("[internal] compressing ").map(|(_, r)| r))
            .filter_map(|r| r.split_whitespace().next()?.parse::<usize>().ok())
            .sum()
    };
    assert_eq!(
        compressed(&stderr(&oa)) + compressed(&stderr(&ob)),
        1,
        "a: {}\nb: {}",
        stderr(&oa),
        stderr(&ob)
    );
    assert_eq!(
        std::fs::read(a_dest).unwrap(),
        std::fs::read(b_dest).unwrap()
    );
    env.assert_consistent();
    assert!(env.lease_files().is_empty(), "{:?}", env.lease_files());
}
