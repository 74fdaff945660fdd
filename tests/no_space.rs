//! A full disk, end to end through the real binary: every "No space left on
//! device" says so and names the path that could not be written, in the
//! final error line too, and no message is printed twice (issue #14).
//! Small tmpfs mounts stand in for a full disk (root only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(ok.success(), "mount -t tmpfs {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn strata_at(root: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(strata())
        .args(args)
        .env("STRATA_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .expect("spawn strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The last line of `stderr`, checked: it says the disk is full, names a
/// path under `under`, and repeats no part of itself.
fn assert_no_space(stderr: &str, under: &Path) {
    let last = stderr.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.contains("No space left on device"), "{stderr}");
    assert!(
        last.contains(&*under.to_string_lossy()),
        "names the path: {stderr}"
    );
    let parts: Vec<&str> = last.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(!parts[i + 1..].contains(p), "{p:?} printed twice: {last}");
    }
}

#[test]
fn a_full_disk_is_reported_with_its_path_everywhere() {
    let test = "a_full_disk_is_reported_with_its_path_everywhere";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(tar) = strata_testutil::busybox_tar(test) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let tar = tar.to_string_lossy().into_owned();

    // A roomy store with a 6 MB image to save and load.
    let big = tmp.path().join("big");
    let (ok, err) = strata_at(&big, &["import", &tar, "bb:1"]);
    assert!(ok, "{err}");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    // Incompressible, so the archive's layer is as big as the file.
    let mut noise = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open("/dev/urandom").expect("urandom"),
            6_000_000,
        ),
        &mut noise,
    )
    .expect("noise");
    std::fs::write(ctx.join("noise"), noise).expect("noise");
    std::fs::write(ctx.join("Dockerfile"), "FROM bb:1\nCOPY noise /noise\n").expect("Dockerfile");
    let (ok, err) = strata_at(
        &big,
        &["build", "-q", "-t", "noise:1", &ctx.to_string_lossy()],
    );
    assert!(ok, "{err}");
    let archive = tmp.path().join("noise.tar");
    let (ok, err) = strata_at(&big, &["save", "noise:1", "-o", &archive.to_string_lossy()]);
    assert!(ok, "{err}");

    // save -o onto a full disk names the file.
    let small_dest = Tmpfs::mount(&tmp.path().join("dest"), "1m");
    let dest = small_dest.0.join("out.tar");
    let (ok, err) = strata_at(&big, &["save", "noise:1", "-o", &dest.to_string_lossy()]);
    assert!(!ok);
    assert_no_space(&err, &dest);

    // load into a store on a small disk: the blob being stored.
    let small = Tmpfs::mount(&tmp.path().join("small"), "8m");
    let root = small.0.join("store");
    let (ok, err) = strata_at(&root, &["load", "-i", &archive.to_string_lossy()]);
    assert!(!ok);
    assert_no_space(&err, &root);
    assert!(err.contains("storing"), "{err}");

    // A build whose layer does not fit: the final line too, not only the
    // step's (it used to end at "compressing a layer").
    let (ok, err) = strata_at(&root, &["check", "--repair"]);
    assert!(ok, "{err}");
    let (ok, err) = strata_at(&root, &["import", &tar, "bb:1"]);
    assert!(ok, "{err}");
    let fill = tmp.path().join("fill");
    std::fs::create_dir_all(&fill).expect("ctx");
    std::fs::write(
        fill.join("Dockerfile"),
        "FROM bb:1\nRUN head -c 3000000 /dev/urandom > /big\n",
    )
    .expect("Dockerfile");
    let (ok, err) = strata_at(
        &root,
        &[
            "build",
            "--progress",
            "plain",
            "--network",
            "none",
            &fill.to_string_lossy(),
        ],
    );
    assert!(!ok);
    assert_no_space(&err, &root);

    // `run`: the container's writable layer that cannot be kept.
    let (ok, err) = strata_at(
        &root,
        &[
            "run",
            "--network",
            "none",
            "bb:1",
            "sh",
            "-c",
            "head -c 3000000 /dev/urandom > /x",
        ],
    );
    assert!(!ok);
    assert_no_space(&err, &root);
}
