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

/// Runs the strata under test as the unprivileged test user with an
/// environment of only PATH and `vars` (`env -i`), as a CI job's user with
/// no home.
fn as_test_user(user: &str, vars: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new("runuser");
    c.args([
        "-u",
        user,
        "--",
        "env",
        "-i",
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ]);
    for (k, v) in vars {
        c.arg(format!("{k}={}", v.display()));
    }
    c.arg(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn runuser")
}

/// A user with no `$HOME` (and no `$XDG_DATA_HOME`) is told to set
/// `STRATA_ROOT` instead of getting a store in `/tmp`; a read-only home
/// fails naming the directory and `STRATA_ROOT`; a writable
/// `STRATA_ROOT` works.
#[test]
fn a_user_without_a_writable_home_is_told_to_set_strata_root() {
    const T: &str = "a_user_without_a_writable_home_is_told_to_set_strata_root";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(user) = strata_testutil::test_user(T) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let o = as_test_user(&user, &[], &["images"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(
            "with neither $HOME nor $XDG_DATA_HOME set; set STRATA_ROOT to a directory this \
             user can write"
        ),
        "{}",
        stderr(&o)
    );
    assert!(
        !Path::new("/tmp/.local/share/strata").exists(),
        "a store was made in /tmp"
    );

    // A home the user cannot write (owned by root, 0555).
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    let o = as_test_user(&user, &[("HOME", &home)], &["images"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let want = format!(
        "cannot create or write the store at {}/.local/share/strata; set STRATA_ROOT to a \
         writable directory",
        home.display()
    );
    assert!(stderr(&o).contains(&want), "no {want:?} in {}", stderr(&o));

    // The way out the messages name.
    let root = tmp.path().join("store");
    std::fs::create_dir(&root).expect("mkdir store");
    let chown = Command::new("chown")
        .args([&user, root.to_str().expect("utf-8 path")])
        .status()
        .expect("spawn chown");
    assert!(chown.success());
    let o = as_test_user(&user, &[("STRATA_ROOT", &root)], &["images"]);
    assert_ok("strata images with STRATA_ROOT set", &o);
}

/// A remote (git) context is the one thing strata fetches into `$TMPDIR`:
/// one that does not fit says to set TMPDIR, and fits elsewhere.
#[test]
fn a_remote_context_needs_no_room_in_tmpdir() {
    const T: &str = "a_remote_context_needs_no_room_in_tmpdir";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let small = tmp.path().join("tmp");
    std::fs::create_dir(&small).expect("mkdir");
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "noexec,nosuid,nodev,size=64k", "tmpfs"])
        .arg(&small)
        .output()
        .expect("spawn mount");
    assert_ok("mount a 64 KiB noexec tmpfs", &mount);
    // A repository of 512 KiB that does not compress.
    let repo = tmp.path().join("ctx.git");
    std::fs::create_dir(&repo).expect("mkdir repo");
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\nCOPY big /big\n").expect("Dockerfile");
    let mut big = vec![0u8; 512 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(repo.join("big"), &big).expect("write big");
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(&repo)
            .output()
            .expect("spawn git");
        assert_ok(&format!("git {args:?}"), &o);
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "ctx"]);
    let url = format!("file://{}", repo.display());
    let build = |tmpdir: &Path| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["build", "--progress", "plain", &url])
            .env("TMPDIR", tmpdir)
            .env("STRATA_ROOT", tmp.path().join("store"))
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    };
    // Nothing goes to TMPDIR: the fetched context is a scratch directory
    // of the store, so a 64 KiB noexec TMPDIR does not matter.
    let built = build(&small);
    let _ = Command::new("umount").arg(&small).status();
    assert_ok("strata build with a 64 KiB noexec TMPDIR", &built);
    let scratch = tmp.path().join("store/tmp");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "scratch left in {}: {left:?}",
        scratch.display()
    );
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

/// A multi-stage build with RUN steps that delete files (whiteouts in the
/// layers the next step's root is made from), FROM an image in the test
/// registry.
fn multi_stage_dockerfile(base: &str) -> String {
    format!(
        "FROM {base} AS build\n\
         RUN mkdir /out && echo built in a container > /out/msg && rm -rf /root /bin/vi\n\
         RUN test ! -e /root && test ! -e /bin/vi && grep -q . /proc/cpuinfo && cp /out/msg /out/again\n\
         FROM {base}\n\
         COPY --from=build /out /out\n\
         RUN cat /out/msg > /copy && rm /out/again\n\
         CMD [\"cat\", \"/copy\"]\n"
    )
}

/// Runs `args` in the test dockerd as `docker run --rm --network host` with
/// Docker's defaults otherwise (seccomp profile, capabilities: no
/// --privileged, no --cap-add, no --security-opt), with the dist binary at
/// /dist/strata and `mounts` (host, container) bind-mounted.
fn in_container(host: &str, extra: &[&str], mounts: &[(&Path, &str)], args: &[&str]) -> Output {
    let mut all: Vec<String> = ["run", "--rm", "--network", "host"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(extra.iter().map(|s| s.to_string()));
    for (from, to) in mounts {
        all.push("-v".into());
        all.push(format!("{}:{to}", from.display()));
    }
    all.push(RUNNER.into());
    all.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    docker(host, &refs)
}

/// The busybox fixture as a dockerd image: the container strata runs in.
const RUNNER: &str = "strata-dist/runner:isolation";

#[test]
fn dist_binary_builds_in_an_unprivileged_container() {
    const T: &str = "dist_binary_builds_in_an_unprivileged_container";
    let Some(context) = dist_context(T) else {
        return;
    };
    let Some(host) = strata_testutil::docker_host(T) else {
        return;
    };
    let Some(registry) = strata_testutil::registry(T) else {
        return;
    };
    let Some(busybox) = strata_testutil::busybox_tar(T) else {
        return;
    };
    let bin = context.join("strata");
    let tmp = tempfile::tempdir().expect("tempdir");
    let busybox = busybox.to_str().expect("utf-8 path");
    assert_ok(
        "docker import of the runner",
        &docker(&host, &["import", busybox, RUNNER]),
    );
    let base = format!("{registry}/strata-dist/busybox:isolation");
    let store = tmp.path().join("host");
    assert_ok(
        "strata import",
        &bare(&bin, &store, &["import", busybox, &base]),
    );
    assert_ok("strata push", &bare(&bin, &store, &["push", &base]));

    // Readable by any user: the --user 1000 run reads it too.
    let shared = tmp.path().join("shared");
    let ctx = shared.join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir ctx");
    std::fs::write(ctx.join("Dockerfile"), multi_stage_dockerfile(&base)).expect("Dockerfile");
    use std::os::unix::fs::PermissionsExt;
    for d in [tmp.path(), &shared, &ctx] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let dist = bin.parent().expect("dist dir");
    let built = format!("{registry}/strata-dist/built:isolation");
    let cache = format!("type=registry,ref={registry}/strata-dist/cache:isolation");
    let cache_to = format!("{cache},mode=max");

    // As root in the container, with the store in the container's own
    // overlayfs (/var/lib/strata): namespaces are refused, chroot works.
    let o = in_container(
        &host,
        &[],
        &[(dist, "/dist:ro"), (&ctx, "/ctx:ro")],
        &[
            "/dist/strata",
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &built,
            "--cache-to",
            &cache_to,
            "/ctx",
        ],
    );
    assert_ok("strata build --push in an unprivileged container", &o);
    let err = stderr(&o);
    assert!(
        err.contains(
            "isolation: chroot (namespaces do not work here (unshare(mount, PID namespaces): EPERM"
        ),
        "auto did not say it picked chroot, and why:\n{err}"
    );
    // A second ephemeral runner (a fresh store) takes every step from the
    // registry cache the first one wrote.
    let o = in_container(
        &host,
        &[],
        &[(dist, "/dist:ro"), (&ctx, "/ctx:ro")],
        &[
            "/dist/strata",
            "build",
            "--progress",
            "plain",
            "--cache-from",
            &cache,
            "/ctx",
        ],
    );
    assert_ok("strata build --cache-from in a fresh container", &o);
    assert!(
        stderr(&o).contains("steps run: 0"),
        "the registry cache was not used:\n{}",
        stderr(&o)
    );
    let _ = docker(&host, &["rmi", &built]);
    assert_ok("docker pull", &docker(&host, &["pull", &built]));
    let run = docker(&host, &["run", "--rm", "--network", "none", &built]);
    let _ = docker(&host, &["rmi", &built]);
    assert_ok("docker run of the image built in a container", &run);
    assert_eq!(stdout(&run), "built in a container\n");

    // As uid 1000 with a writable store: neither user namespaces nor chroot
    // is allowed, and the first RUN says so.
    let store = shared.join("store1000");
    std::fs::create_dir(&store).expect("mkdir store");
    std::os::unix::fs::chown(&store, Some(1000), Some(1000)).expect("chown store");
    let o = in_container(
        &host,
        &["--user", "1000", "-e", "STRATA_ROOT=/store"],
        &[(dist, "/dist:ro"), (&ctx, "/ctx:ro"), (&store, "/store")],
        &["/dist/strata", "build", "--progress", "plain", "/ctx"],
    );
    let _ = docker(&host, &["rmi", RUNNER]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for missing in [
        "no isolation for RUN steps works here",
        "unshare(user namespace): EPERM",
        "strata runs as uid 1000, and chroot needs root with CAP_SYS_CHROOT (run the container as root, without --user)",
    ] {
        assert!(err.contains(missing), "no {missing:?} in:\n{err}");
    }
}

/// `apt-get install` in an unprivileged container (Docker's defaults, as
/// above): `auto` picks chroot, apt drops to its `_apt` user there, and the
/// package lands in the image (tests/chroot_packages.rs has the same on the
/// host; docs/ci.md says what apt needs under chroot).
#[test]
fn dist_binary_runs_apt_get_in_an_unprivileged_container() {
    const T: &str = "dist_binary_runs_apt_get_in_an_unprivileged_container";
    let Some(context) = dist_context(T) else {
        return;
    };
    let Some(host) = strata_testutil::docker_host(T) else {
        return;
    };
    let Some(busybox) = strata_testutil::busybox_tar(T) else {
        return;
    };
    let Some(debian) = strata_testutil::debian_tar(T) else {
        return;
    };
    const APT_RUNNER: &str = "strata-dist/runner:apt";
    assert_ok(
        "docker import of the runner",
        &docker(
            &host,
            &["import", busybox.to_str().expect("utf-8 path"), APT_RUNNER],
        ),
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir ctx");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM strata-test/debian:bookworm AS pkg\n\
         RUN apt-get update -qq \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hello \
          && hello\n\
         FROM scratch\n\
         COPY --from=pkg /usr/bin/hello /out/\n",
    )
    .expect("Dockerfile");
    let dist = context.join("strata");
    let dist = dist.parent().expect("dist dir");
    let mut args = vec![
        "run".to_string(),
        "--rm".into(),
        "--network".into(),
        "host".into(),
    ];
    for (from, to) in [
        (dist, "/dist:ro"),
        (&ctx, "/ctx:ro"),
        (debian.as_path(), "/debian.tar:ro"),
    ] {
        args.push("-v".into());
        args.push(format!("{}:{to}", from.display()));
    }
    args.extend(
        [
            APT_RUNNER,
            "sh",
            "-c",
            "/dist/strata import /debian.tar strata-test/debian:bookworm >/dev/null \
             && /dist/strata build --progress plain -o type=local,dest=/o /ctx \
             && test -x /o/out/hello && echo hello is in the image",
        ]
        .map(String::from),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = docker(&host, &refs);
    let _ = docker(&host, &["rmi", APT_RUNNER]);
    assert_ok("apt-get in an unprivileged container", &o);
    let err = stderr(&o);
    assert!(err.contains("isolation: chroot ("), "{err}");
    assert!(err.lines().any(|l| l.ends_with(" Hello, world!")), "{err}");
    assert!(
        stdout(&o).lines().any(|l| l == "hello is in the image"),
        "{}",
        stdout(&o)
    );
}
