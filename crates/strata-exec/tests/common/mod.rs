//! Shared fixtures for the executor's integration tests: the busybox base
//! unpacked as a snapshot, a step builder, a test-side layer tar writer (to
//! check changes after applying them), and leak checks.

#![allow(dead_code, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_exec::snapshot::{Mode, unpack_layer};
use strata_exec::{Network, OutputStream, RunOutcome, RunSpec};
use strata_oci::{Change, ChangeKind};

pub struct Fixture {
    pub tmp: tempfile::TempDir,
    /// The unpacked busybox base.
    pub base: PathBuf,
}

impl Fixture {
    pub fn new(test: &str) -> Option<Fixture> {
        strata_exec::set_helper_exe(PathBuf::from(env!("CARGO_BIN_EXE_strata-exec-helper")));
        let tar = strata_testutil::busybox_tar(test)?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let base = tmp.path().join("snapshots").join("base");
        let f = std::fs::File::open(&tar).expect("open busybox tar");
        unpack_layer(f, &base, Mode::current()).expect("unpack busybox");
        Some(Fixture { tmp, base })
    }

    pub fn scratch(&self) -> PathBuf {
        let p = self.tmp.path().join("scratch");
        std::fs::create_dir_all(&p).expect("scratch");
        p
    }

    pub fn spec(&self, script: &str) -> (RunSpec, Arc<Mutex<Vec<u8>>>) {
        self.spec_on(vec![self.base.clone()], script)
    }

    pub fn spec_on(&self, lowers: Vec<PathBuf>, script: &str) -> (RunSpec, Arc<Mutex<Vec<u8>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let spec = RunSpec {
            lowers,
            scratch_dir: self.scratch(),
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "strata-test".into(),
            provide_hostname: true,
            network: Network::None,
            mounts: vec![],
            extra_hosts: vec![],
            shm_size: None,
            output: Box::new(move |_s: OutputStream, b: &[u8]| {
                if let Ok(mut o) = sink.lock() {
                    o.extend_from_slice(b)
                }
            }),
            cancel: None,
            stdin: None,
            seccomp: true,
            ulimits: Vec::new(),
        };
        (spec, out)
    }

    /// Runs `script` on the base; asserts it succeeded and left nothing behind.
    pub fn run_ok(&self, script: &str) -> (RunOutcome, String) {
        let (spec, out) = self.spec(script);
        self.finish(spec, out)
    }

    pub fn finish(&self, spec: RunSpec, out: Arc<Mutex<Vec<u8>>>) -> (RunOutcome, String) {
        let r = strata_exec::run(spec);
        let text = String::from_utf8_lossy(&out.lock().expect("output")).into_owned();
        let r = r.unwrap_or_else(|e| panic!("run failed: {e}\noutput:\n{text}"));
        assert!(
            r.status.success(),
            "step failed with {}: output:\n{text}",
            r.status
        );
        assert_no_mounts(&self.tmp.path().to_string_lossy());
        (r, text)
    }

    /// Writes `changes` of `outcome` as a layer tar, unpacks it as a new
    /// snapshot, and returns the lowers with it on top of the base.
    pub fn apply(&self, outcome: &RunOutcome, name: &str) -> Vec<PathBuf> {
        let changes = outcome.upper.changes().expect("changes");
        let tar = layer_tar(outcome.upper.root(), &changes);
        let dir = self.tmp.path().join("snapshots").join(name);
        unpack_layer(&tar[..], &dir, Mode::current()).expect("unpack produced layer");
        vec![dir, self.base.clone()]
    }
}

pub fn has(changes: &[Change], path: &str, kind: ChangeKind) -> bool {
    changes
        .iter()
        .any(|c| c.path == Path::new(path) && c.kind == kind)
}

pub fn paths(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| c.path.to_string_lossy().into_owned())
        .collect()
}

/// The host uid/gid a container ID appears as on disk.
pub fn host_id(id: u32, uid: bool) -> u32 {
    if nix::unistd::geteuid().is_root() {
        return id;
    }
    match strata_exec::idmap::sub_ranges() {
        Some((u, g)) if id > 0 => (if uid { u.start } else { g.start }) + id - 1,
        _ => {
            if uid {
                nix::unistd::getuid().as_raw()
            } else {
                nix::unistd::getgid().as_raw()
            }
        }
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A minimal layer writer for tests: Docker-style whiteouts, hard links,
/// xattrs as PAX `SCHILY.xattr.*` records.
pub fn layer_tar(root: &Path, changes: &[Change]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let ids = strata_exec::idmap::IdMapping::current();
    for c in changes {
        match c.kind {
            ChangeKind::Delete => {
                let name = format!(
                    ".wh.{}",
                    c.path.file_name().expect("name").to_string_lossy()
                );
                let p = c.path.with_file_name(name);
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, p, &[][..]).expect("whiteout");
            }
            ChangeKind::Upsert | ChangeKind::OpaqueDir => {
                let full = root.join(&c.path);
                let m = std::fs::symlink_metadata(&full).expect("changed path exists");
                let mut pax = Vec::new();
                if let Ok(names) = xattr::list(&full) {
                    for n in names {
                        let ns = n.to_string_lossy();
                        if ns.starts_with("trusted.overlay.") || ns.starts_with("user.overlay.") {
                            continue;
                        }
                        if let Ok(Some(v)) = xattr::get(&full, &n) {
                            pax.extend(pax_record(&format!("SCHILY.xattr.{ns}"), &v));
                        }
                    }
                }
                if !pax.is_empty() {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::XHeader);
                    h.set_size(pax.len() as u64);
                    h.set_path("PaxHeader").expect("pax path");
                    h.set_cksum();
                    b.append(&h, &pax[..]).expect("pax");
                }
                if m.is_file() && m.nlink() > 1 {
                    if let Some(first) = inodes.get(&(m.dev(), m.ino())) {
                        // The inode's own metadata, as tar tools write it:
                        // applying a link header sets the shared inode's.
                        let mut h = tar::Header::new_gnu();
                        h.set_entry_type(tar::EntryType::Link);
                        h.set_size(0);
                        h.set_mode(m.mode() & 0o7777);
                        h.set_uid(u64::from(ids.container_uid(m.uid())));
                        h.set_gid(u64::from(ids.container_gid(m.gid())));
                        h.set_mtime(m.mtime().max(0) as u64);
                        b.append_link(&mut h, &c.path, first).expect("link");
                        continue;
                    }
                    inodes.insert((m.dev(), m.ino()), c.path.clone());
                }
                let mut h = tar::Header::new_gnu();
                h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
                h.set_uid(ids.container_uid(m.uid()).into());
                h.set_gid(ids.container_gid(m.gid()).into());
                if m.file_type().is_symlink() {
                    h.set_size(0);
                    let target = std::fs::read_link(&full).expect("readlink");
                    b.append_link(&mut h, &c.path, target).expect("symlink");
                } else if m.is_file() {
                    let f = std::fs::File::open(&full).expect("open changed file");
                    b.append_data(&mut h, &c.path, f).expect("file");
                } else {
                    h.set_size(0);
                    b.append_data(&mut h, &c.path, &[][..]).expect("entry");
                }
                if c.kind == ChangeKind::OpaqueDir {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(0);
                    h.set_mode(0o644);
                    b.append_data(&mut h, c.path.join(".wh..wh..opq"), &[][..])
                        .expect("opq");
                }
            }
        }
    }
    b.into_inner().expect("tar")
}

/// No mount anywhere on the system mentions `needle` (the test's temp dir).
pub fn assert_no_mounts(needle: &str) {
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(info) = std::fs::read_to_string(entry.path().join("mountinfo")) {
            for line in info.lines() {
                assert!(
                    !line.contains(needle),
                    "pid {name:?} still has a mount: {line}"
                );
            }
        }
    }
}

/// Mount lines in any process's mountinfo containing `needle`.
pub fn mounts_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(info) = std::fs::read_to_string(entry.path().join("mountinfo")) {
            found.extend(
                info.lines()
                    .filter(|l| l.contains(needle))
                    .map(String::from),
            );
        }
    }
    found
}

/// Pids of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{name}: {cmd}"));
            }
        }
    }
    found
}

/// Waits up to 10 s for `cond`.
pub fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Runs this test binary's test `name` as the unprivileged test user (the
/// rootless variant of a test). Skips loudly when not root or no user.
pub fn run_as_test_user(name: &str) {
    let test = format!("{name}_rootless");
    if !nix::unistd::geteuid().is_root() {
        // Already unprivileged: the plain variant is the rootless run.
        strata_testutil::skip(
            &test,
            "already running unprivileged; the plain test covers rootless",
        );
        return;
    }
    let Some(user) = strata_testutil::test_user(&test) else {
        return;
    };
    if strata_testutil::busybox_tar(&test).is_none() {
        return;
    }
    let exe = std::env::current_exe().expect("current exe");
    let out = std::process::Command::new("runuser")
        .args(["-u", &user, "--"])
        .arg(&exe)
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("TMPDIR", "/tmp")
        .output()
        .expect("runuser");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "rootless run of {name} failed:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "rootless run of {name} did not run it:\n{text}"
    );
    assert!(
        !text.contains("SKIPPED"),
        "rootless run of {name} skipped:\n{text}"
    );
    let _ = std::io::stderr().write_all(b"");
}

/// Declares a test and its rootless twin. With `rootless_needs: F`, the
/// twin first asks `F` (a `fn() -> Option<&'static str>`) what the host
/// lacks for it, and skips loudly with that reason when it says.
#[macro_export]
macro_rules! both {
    ($name:ident, $rootless:ident, $body:expr) => {
        both!($name, $rootless, rootless_needs: || None, $body);
    };
    ($name:ident, $rootless:ident, rootless_needs: $missing:expr, $body:expr) => {
        #[test]
        fn $name() {
            if let Some(fx) = common::Fixture::new(stringify!($name)) {
                let f: fn(&common::Fixture) = $body;
                f(&fx);
            }
        }
        #[test]
        fn $rootless() {
            let missing: fn() -> Option<&'static str> = $missing;
            if let Some(reason) = missing() {
                strata_testutil::skip(stringify!($rootless), reason);
                return;
            }
            common::run_as_test_user(stringify!($name));
        }
    };
}
