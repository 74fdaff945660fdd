//! The shipped binary and strata's own image (issue 15): the static musl
//! binary that `cargo xtask dist` builds builds its own image (`Containerfile`,
//! staged in `target/dist/context`) to the same image ID twice, with no
//! `$HOME`; that `FROM scratch` image runs in dockerd and pulls from a
//! plain-HTTP loopback registry with no CA bundle at all. And a build with
//! `$HOME` unset and `$TMPDIR` on a tiny `noexec` tmpfs works.
//!
//! The dist binary is not built here (a release musl build takes minutes):
//! `.ci/test` runs `cargo xtask dist` once before the tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_ok(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// `target/dist/context`, staged by `cargo xtask dist`: the target dir is
/// two levels above the test binary's `strata` (`target/debug/strata`).
fn dist_context(test: &str) -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let context = bin.parent()?.parent()?.join("dist").join("context");
    if context.join("strata").is_file() {
        Some(context)
    } else {
        strata_testutil::skip(
            test,
            &format!(
                "{} has no dist binary: run `cargo xtask dist` first (.ci/test does)",
                context.display()
            ),
        );
        None
    }
}

/// Runs `bin` with only PATH and `STRATA_ROOT` set: no HOME, no XDG
/// variables, as in a bare container.
fn bare(bin: &Path, root: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("STRATA_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .expect("spawn strata")
}

fn docker(host: &str, args: &[&str]) -> Output {
    Command::new("/usr/bin/docker")
        .args(args)
        .env("DOCKER_HOST", host)
        .stdin(Stdio::null())
        .output()
        .expect("spawn docker")
}

#[test]
fn dist_image_is_reproducible_and_runs_bare_in_docker() {
    const T: &str = "dist_image_is_reproducible_and_runs_bare_in_docker";
    let Some(context) = dist_context(T) else {
        return;
    };
    let bin = context.join("strata");
    let ctx = context.to_str().expect("utf-8 path");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Two stores: the second build cannot reuse anything of the first.
    let id_a = {
        let o = bare(
            &bin,
            &tmp.path().join("a"),
            &["build", "-q", "-t", "strata:dev", ctx],
        );
        assert_ok("dist strata build (store a)", &o);
        stdout(&o).trim().to_owned()
    };
    let tar = tmp.path().join("strata-dev.tar");
    let o = bare(
        &bin,
        &tmp.path().join("b"),
        &[
            "build",
            "-q",
            "-t",
            "strata:dev",
            "-o",
            &format!("type=docker,dest={}", tar.display()),
            ctx,
        ],
    );
    assert_ok("dist strata build (store b)", &o);
    let id_b = stdout(&o).trim().to_owned();
    assert!(id_a.starts_with("sha256:"), "not an image ID: {id_a:?}");
    assert_eq!(id_a, id_b, "the same context gave two image IDs");

    let Some(host) = strata_testutil::docker_host(T) else {
        return;
    };
    let Some(registry) = strata_testutil::registry(T) else {
        return;
    };
    let Some(busybox) = strata_testutil::busybox_tar(T) else {
        return;
    };
    let load = docker(&host, &["load", "-i", tar.to_str().expect("utf-8 path")]);
    assert_ok("docker load", &load);
    let version = docker(
        &host,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "strata:dev",
            "--version",
        ],
    );
    assert_ok("docker run strata:dev --version", &version);
    assert!(
        stdout(&version).starts_with("strata "),
        "{}",
        stdout(&version)
    );

    // An image in the plain-HTTP loopback registry, pulled from inside the
    // scratch container with the CA bundle pointed away: no certificates
    // anywhere, and none needed.
    let store = tmp.path().join("host");
    let busybox = busybox.to_str().expect("utf-8 path");
    let remote = format!("{registry}/strata-dist/busybox:bare");
    assert_ok(
        "strata import",
        &bare(&bin, &store, &["import", busybox, &remote]),
    );
    assert_ok("strata push", &bare(&bin, &store, &["push", &remote]));
    let pull = docker(
        &host,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "-e",
            "SSL_CERT_FILE=/nonexistent",
            "-e",
            "SSL_CERT_DIR=/nonexistent",
            "strata:dev",
            "pull",
            &remote,
        ],
    );
    let _ = docker(&host, &["rmi", "strata:dev"]);
    assert_ok("strata pull inside the strata:dev container", &pull);
}

#[test]
fn build_works_without_home_and_with_a_small_noexec_tmpdir() {
    const T: &str = "build_works_without_home_and_with_a_small_noexec_tmpdir";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(busybox) = strata_testutil::busybox_tar(T) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = tmp.path().join("tmp");
    std::fs::create_dir(&small).expect("mkdir");
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=64k", "tmpfs"])
        .arg(&small)
        .output()
        .expect("spawn mount");
    assert_ok("mount a 64 KiB noexec tmpfs", &mount);
    let root = tmp.path().join("store");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM strata-test/busybox:latest\nCOPY a /a\nRUN cat /a > /b && test -s /b\n",
    )
    .expect("write Dockerfile");
    std::fs::write(ctx.join("a"), "a\n").expect("write a");
    let strata = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env_remove("HOME")
            .env_remove("XDG_DATA_HOME")
            .env("TMPDIR", &small)
            .env("STRATA_ROOT", &root)
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    };
    let import = strata(&[
        "import",
        busybox.to_str().expect("utf-8 path"),
        "strata-test/busybox:latest",
    ]);
    let build = strata(&[
        "build",
        "--progress",
        "plain",
        ctx.to_str().expect("utf-8 path"),
    ]);
    let _ = Command::new("umount").arg(&small).status();
    assert_ok("strata import", &import);
    assert_ok("strata build with HOME unset and TMPDIR noexec", &build);
}

#[test]
fn loopback_registry_needs_no_ca_certificates() {
    const T: &str = "loopback_registry_needs_no_ca_certificates";
    let Some(registry) = strata_testutil::registry(T) else {
        return;
    };
    let Some(busybox) = strata_testutil::busybox_tar(T) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let remote = format!("{registry}/strata-dist/no-ca:1");
    let strata = |root: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_ROOT", tmp.path().join(root))
            // rustls-native-certs reads these first: no system bundle at all,
            // as in a container without ca-certificates.
            .env("SSL_CERT_FILE", "/nonexistent/ca.crt")
            .env("SSL_CERT_DIR", "/nonexistent")
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    };
    let busybox = busybox.to_str().expect("utf-8 path");
    assert_ok("strata import", &strata("a", &["import", busybox, &remote]));
    assert_ok("strata push", &strata("a", &["push", &remote]));
    assert_ok("strata pull", &strata("b", &["pull", &remote]));
}
