//! A full disk, end to end through the real binary: every "No space left on
//! device" says so and names the path that could not be written, in the
//! final error line too, and no message is printed twice (issue #14).
//! Small tmpfs mounts stand in for a full disk (root only).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn strata() -> PathBuf {
    strata_testutil::strata_bin(env!("CARGO_BIN_EXE_strata"))
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

/// Runs `strata ARGS` as root on the store at `root`; says whether it
/// succeeded, with its stderr.
fn strata_at(root: &Path, args: &[&str]) -> (bool, String) {
    let (ok, _, err) = strata_as(None, root, args);
    (ok, err)
}

/// `len` bytes of /dev/urandom: incompressible, so a layer or archive that
/// holds them is as big as they are.
fn noise(len: u64) -> Vec<u8> {
    let mut noise = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::open("/dev/urandom").expect("urandom"), len),
        &mut noise,
    )
    .expect("noise");
    noise
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
    std::fs::write(ctx.join("noise"), noise(6_000_000)).expect("noise");
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

/// Runs `strata ARGS` on the store at `root`, as root or (rootless) as
/// `user`; says whether it succeeded, with its stdout and stderr.
fn strata_as(user: Option<&str>, root: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = match user {
        None => {
            let mut c = Command::new(strata());
            c.args(args).env("STRATA_ROOT", root);
            c
        }
        Some(user) => {
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            let script = format!(
                "STRATA_ROOT='{}' exec '{}' {}",
                root.display(),
                strata().display(),
                quoted.join(" ")
            );
            let mut c = Command::new("su");
            c.args([user, "-s", "/bin/sh", "-c", &script]);
            c
        }
    };
    let out = cmd.stdin(Stdio::null()).output().expect("spawn strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fills the filesystem of `path` (a new file there) until it has about
/// `leave` bytes free: written until the disk is full, then cut back.
fn fill_leaving(path: &Path, leave: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    f.set_len(written.saturating_sub(leave))
        .expect("cut filler");
}

/// The first RUN on a base whose layer has no snapshot yet unpacks it into
/// `snapshots/`; when the disk fills there, the error says so with the
/// path (rootless too, where the unpack runs in a helper), the half-made
/// snapshot is gone at once (its space with it), and once space is freed
/// `check` is clean and the next build unpacks the whole layer again.
fn a_full_disk_while_unpacking_a_base(test: &str, user: Option<&str>) {
    let Some(busybox) = strata_testutil::busybox_tar(test) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // Reachable by the rootless user.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    // A base image of busybox plus 6 MB of noise, one layer.
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs");
    let ok = Command::new("tar")
        .arg("-xf")
        .arg(&busybox)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .expect("tar");
    assert!(ok.success(), "unpacking the busybox fixture");
    let noise = noise(6_000_000);
    let noise_sum = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(&noise))
    };
    std::fs::write(rootfs.join("noise"), &noise).expect("noise");
    let base = tmp.path().join("base.tar");
    let ok = Command::new("tar")
        .arg("-cf")
        .arg(&base)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .expect("tar");
    assert!(ok.success(), "packing the base");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).expect("ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM noisy:1\nRUN echo '{noise_sum}  /noise' | sha256sum -c && wc -c < /noise > /size\n"
        ),
    )
    .expect("Dockerfile");
    std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");

    let disk = Tmpfs::mount(&tmp.path().join("disk"), "32m");
    std::fs::set_permissions(&disk.0, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let root = disk.0.join("store");
    let (ok, _, err) = strata_as(user, &root, &["import", &base.to_string_lossy(), "noisy:1"]);
    assert!(ok, "{err}");
    // Room for the build's lease and scratch, not for the 6 MB snapshot.
    let filler = disk.0.join("filler");
    fill_leaving(&filler, 1_000_000);
    let build = [
        "build",
        "--progress",
        "plain",
        "--network",
        "none",
        "-t",
        "built:1",
    ];
    let ctx = ctx.to_string_lossy().into_owned();
    let args: Vec<&str> = build.iter().copied().chain([ctx.as_str()]).collect();
    let (ok, _, err) = strata_as(user, &root, &args);
    assert!(!ok, "the build fit: {err}");
    assert_no_space(&err, &root.join("snapshots"));
    // The half-made snapshot went with the failure, not at the next build.
    let left: Vec<_> = std::fs::read_dir(root.join("snapshots"))
        .expect("snapshots")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "half-made snapshots left: {left:?}");

    std::fs::remove_file(&filler).expect("free the disk");
    let check = || {
        let (ok, report, err) = strata_as(user, &root, &["check"]);
        assert!(ok, "{err}");
        assert!(report.contains(" 0 problem(s)"), "{report}");
        report
    };
    let report = check();
    assert!(!report.contains("stale"), "{report}");
    // The next build unpacks the whole layer: the step sees every byte.
    let (ok, _, err) = strata_as(user, &root, &args);
    assert!(ok, "{err}");
    check();
}

#[test]
fn a_full_disk_while_unpacking_a_base_is_reported_and_cleaned_up() {
    let test = "a_full_disk_while_unpacking_a_base_is_reported_and_cleaned_up";
    if !strata_testutil::require_root(test) {
        return;
    }
    a_full_disk_while_unpacking_a_base(test, None);
}

#[test]
fn a_full_disk_while_unpacking_a_base_rootless_is_reported_and_cleaned_up() {
    let test = "a_full_disk_while_unpacking_a_base_rootless_is_reported_and_cleaned_up";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(user) = strata_testutil::test_user(test) else {
        return;
    };
    a_full_disk_while_unpacking_a_base(test, Some(&user));
}
