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
    let check = env.ok(&["check"]);
    assert!(check.contains(" 0 problem(s)"), "{check}");
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
    let check = env.ok(&["check"]);
    assert!(check.contains(" 0 problem(s)"), "{check}");
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
