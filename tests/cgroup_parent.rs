//! `--cgroup-parent` (issue #16), with the real binary: RUN steps run in a
//! cgroup under the parent given (read below the cgroup2 root, as Docker
//! reads it), which is gone after the build; the parent is in the steps'
//! cache keys (as in BuildKit, whose ExecOp key holds `Meta.CgroupParent`);
//! `..`, systemd slices, and machines where steps get no cgroup are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The cgroup2 mount, where step cgroups are made (as strata finds it).
fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A store with the busybox fixture, and a context whose RUN step keeps
/// what `/proc/self/cgroup` said, exported by a scratch stage.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    ctx: PathBuf,
    out: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        let tar = strata_testutil::busybox_tar(test)?;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("store");
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).expect("mkdir ctx");
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM strata-test/busybox:latest AS step\n\
             RUN cat /proc/self/cgroup > /cgroup\n\
             FROM scratch\n\
             COPY --from=step /cgroup /cgroup\n",
        )
        .expect("write Dockerfile");
        let f = Fixture {
            out: tmp.path().join("out"),
            _tmp: tmp,
            root,
            ctx,
        };
        let o = f.strata(&[
            "import",
            tar.to_str().expect("utf-8 path"),
            "strata-test/busybox:latest",
        ]);
        assert!(o.status.success(), "import: {}", text(&o.stderr));
        Some(f)
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(strata())
            .args(args)
            .env("STRATA_ROOT", &self.root)
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    }

    fn build(&self, isolation: &str, parent: &str) -> Output {
        let dest = format!("type=local,dest={}", self.out.display());
        let ctx = self.ctx.to_str().expect("utf-8 path");
        self.strata(&[
            "build",
            "--progress",
            "plain",
            "--isolation",
            isolation,
            "--cgroup-parent",
            parent,
            "-o",
            &dest,
            ctx,
        ])
    }

    /// The step's cgroup2 line (`0::/PATH`), as it read it.
    fn step_cgroup(&self) -> String {
        let all = std::fs::read_to_string(self.out.join("cgroup")).expect("read /cgroup");
        all.lines()
            .find(|l| l.starts_with("0::"))
            .unwrap_or_else(|| panic!("no cgroup2 line in {all:?}"))
            .to_owned()
    }
}

/// Removes a test's parent cgroups (empty once the build is over), deepest
/// first.
fn remove_cgroups(mount: &Path, parents: &[&str]) {
    for p in parents {
        let _ = std::fs::remove_dir(mount.join(p));
    }
}

#[test]
fn run_steps_get_their_cgroup_under_the_parent() {
    const T: &str = "run_steps_get_their_cgroup_under_the_parent";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        strata_testutil::skip(T, "no cgroup2 filesystem is mounted");
        return;
    };
    let Some(f) = Fixture::new(T) else { return };
    let top = format!("strata-test-{}", std::process::id());
    let first = format!("{top}/jobs");
    let second = format!("{top}/other");
    for isolation in ["namespaces", "chroot"] {
        // A leading `/` reads the same as none (Docker's cgroupfs driver).
        for parent in [&first, &second] {
            let o = f.build(isolation, &format!("/{parent}"));
            let err = text(&o.stderr);
            assert!(o.status.success(), "{isolation} {parent}: {err}");
            let line = f.step_cgroup();
            // Another parent is another key: the step ran again there.
            assert!(
                line.starts_with(&format!("0::/{parent}/")) && line.contains("-step-"),
                "{isolation}: the step ran in {line:?}, not under {parent}"
            );
            let left: Vec<_> = std::fs::read_dir(mount.join(parent))
                .expect("the parent cgroup is kept")
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name())
                .collect();
            assert!(left.is_empty(), "{isolation}: step cgroups left: {left:?}");
        }
        remove_cgroups(&mount, &[&first, &second]);
    }
    remove_cgroups(&mount, &[&top]);
    // Without the flag, steps are where they were: in strata's own.
    let o = f.strata(&[
        "build",
        "--progress",
        "plain",
        "-o",
        &format!("type=local,dest={}", f.out.display()),
        f.ctx.to_str().expect("utf-8 path"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        f.step_cgroup().starts_with("0::/strata/"),
        "{}",
        f.step_cgroup()
    );
}

#[test]
fn escapes_and_systemd_slices_are_refused() {
    const T: &str = "escapes_and_systemd_slices_are_refused";
    let Some(f) = Fixture::new(T) else { return };
    for (parent, says) in [
        (
            "ci/../../etc",
            "--cgroup-parent \"ci/../../etc\": `..` would leave the cgroup hierarchy",
        ),
        (
            "ci.slice",
            "--cgroup-parent \"ci.slice\": systemd slice syntax (the systemd cgroup driver's) is not supported",
        ),
        (
            "/",
            "--cgroup-parent \"/\": names the root of the cgroup hierarchy",
        ),
    ] {
        let o = f.build("auto", parent);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{parent} was accepted: {err}");
        assert!(err.contains(says), "{parent}: {err}");
        assert!(!err.contains("#1 "), "{parent}: the build started: {err}");
    }
}

/// Rootless, steps get no cgroup: the flag is refused before the build
/// starts, saying why, rather than ignored.
#[test]
fn refused_where_steps_get_no_cgroup() {
    const T: &str = "refused_where_steps_get_no_cgroup";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(user) = strata_testutil::test_user(T) else {
        return;
    };
    let Some(f) = Fixture::new(T) else { return };
    // The user's own store, under a directory it can enter.
    let home = f.root.parent().expect("a parent").join("rootless");
    std::fs::create_dir(&home).expect("mkdir");
    let chown = Command::new("chown")
        .args([&format!("{user}:"), home.to_str().expect("utf-8 path")])
        .status()
        .expect("chown");
    assert!(chown.success());
    std::fs::set_permissions(f.root.parent().expect("a parent"), perms_755()).expect("chmod");
    std::fs::set_permissions(&f.ctx, perms_755()).expect("chmod");
    let o = Command::new("runuser")
        .args([
            "-u",
            &user,
            "--",
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ])
        .arg(format!("STRATA_ROOT={}", home.join("store").display()))
        .arg(format!("HOME={}", home.display()))
        .arg(strata())
        .args([
            "build",
            "--progress",
            "plain",
            "--cgroup-parent",
            "ci/jobs",
            f.ctx.to_str().expect("utf-8 path"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("spawn runuser");
    let err = text(&o.stderr);
    assert!(!o.status.success(), "accepted rootless: {err}");
    assert!(
        err.contains("--cgroup-parent ci/jobs: RUN steps get no cgroup here (rootless"),
        "{err}"
    );
    assert!(!err.contains("#1 "), "the build started: {err}");
}

fn perms_755() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o755)
}
