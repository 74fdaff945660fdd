//! Package managers under `--isolation chroot` (issue #15), from their
//! registries over the host's network (`--network host`, as
//! examples/hello-python's apt-get needs): apt-get on the debootstrapped
//! Debian base, npm on the runtimes base. What they need from the chroot:
//!
//! - apt-get drops to its `_apt` user for downloads (`setgroups`,
//!   `setresuid`: Docker's default capabilities and seccomp profile allow
//!   them), writes to `/dev/null` and `/tmp`, and needs no `/proc/self`
//!   (the chroot's `/proc` is a copy of a few files). dpkg's terminal log
//!   wants a pseudo-terminal from `/dev/pts`, a devpts mount a chroot cannot
//!   make: apt prints `E: Can not write log (Is /dev/pts mounted?)` and goes
//!   on; the install succeeds (`-o Dpkg::Use-Pty=0` silences it).
//! - npm (10, run by bookworm's node 18) needs the registry's certificate
//!   chain to verify: the base has no CA bundle, so the test gives npm the
//!   host's (`NODE_EXTRA_CA_CERTS`, or Debian's bundle), as a CI job would
//!   install ca-certificates or mount its own; and a proxy where the host
//!   uses one (`HTTPS_PROXY`, passed as a build argument, which reaches the
//!   step as in BuildKit).
//!
//! Both need the network, so they skip (loudly) where the mirror or
//! registry is unreachable.

use std::io::Read;
use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn strata_in(root: &Path, args: &[&str]) -> Output {
    Command::new(strata())
        .args(args)
        .env("STRATA_ROOT", root)
        .stdin(Stdio::null())
        .output()
        .expect("spawn strata")
}

/// Whether `host:port` accepts a TCP connection within a few seconds;
/// skips the test loudly where not.
fn reachable(test: &str, host: &str, port: u16) -> bool {
    let ok = (host, port).to_socket_addrs().is_ok_and(|mut addrs| {
        addrs.any(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok())
    });
    if !ok {
        strata_testutil::skip(test, &format!("{host}:{port} is unreachable from here"));
    }
    ok
}

/// The host part of an `http[s]://HOST[:PORT]/...` URL, with its port.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let default = if scheme == "https" { 443 } else { 80 };
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((authority.to_owned(), default)),
    }
}

/// The mirror the Debian fixture's apt uses (its `etc/apt/sources.list`).
fn fixture_mirror(tar: &Path) -> Option<String> {
    let file = std::fs::File::open(tar).ok()?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().ok()?.flatten() {
        let mut entry = entry;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == "etc/apt/sources.list" {
            let mut s = String::new();
            entry.read_to_string(&mut s).ok()?;
            return s
                .split_whitespace()
                .find(|w| w.starts_with("http://") || w.starts_with("https://"))
                .map(str::to_owned);
        }
    }
    None
}

/// Builds `ctx` with `--isolation chroot --network host` and `flags`,
/// exporting the final stage to `out`; asserts success.
fn build_chroot(root: &Path, ctx: &Path, out: &Path, flags: &[&str]) -> String {
    let dest = format!("type=local,dest={}", out.display());
    let mut args = vec![
        "build",
        "--progress",
        "plain",
        "--isolation",
        "chroot",
        "--network",
        "host",
        "-o",
        &dest,
    ];
    args.extend_from_slice(flags);
    args.push(ctx.to_str().expect("utf-8 path"));
    let o = strata_in(root, &args);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    err
}

fn has_step_line(log: &str, want: &str) -> bool {
    log.lines()
        .any(|l| l.split_once(' ').map(|x| x.1.trim_end()) == Some(want))
}

/// `apt-get update && apt-get install` of a small package, chrooted: the
/// package runs in the step, and its files and dpkg's record of it are in
/// the step's snapshot (a scratch stage copies them out of it).
#[test]
fn apt_get_installs_a_package_under_chroot() {
    const T: &str = "apt_get_installs_a_package_under_chroot";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(debian) = strata_testutil::debian_tar(T) else {
        return;
    };
    let mirror = fixture_mirror(&debian).expect("the Debian fixture's apt mirror");
    let (host, port) = host_port(&mirror).expect("a mirror URL");
    if !reachable(T, &host, port) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let o = strata_in(
        &root,
        &[
            "import",
            debian.to_str().expect("utf-8 path"),
            "strata-test/debian:bookworm",
        ],
    );
    assert!(o.status.success(), "import: {}", text(&o.stderr));
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir(&ctx).expect("mkdir");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM strata-test/debian:bookworm AS pkg\n\
         RUN apt-get update \
          && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends hello \
          && hello && dpkg-query -W -f='${Status}\\n' hello\n\
         FROM scratch\n\
         COPY --from=pkg /usr/bin/hello /var/lib/dpkg/status /out/\n",
    )
    .expect("write Dockerfile");
    let out = tmp.path().join("out");
    let log = build_chroot(&root, &ctx, &out, &[]);
    for want in ["Hello, world!", "install ok installed"] {
        assert!(has_step_line(&log, want), "no step line {want:?}:\n{log}");
    }
    assert!(out.join("out/hello").is_file(), "no /usr/bin/hello:\n{log}");
    let status = std::fs::read_to_string(out.join("out/status")).expect("dpkg status");
    assert!(status.contains("\nPackage: hello\n"), "{status}");
}

/// The CA bundle npm on this machine trusts, for the step: the node the
/// host runs is told by `NODE_EXTRA_CA_CERTS`, else Debian's bundle.
fn host_ca_bundle() -> Option<PathBuf> {
    std::env::var_os("NODE_EXTRA_CA_CERTS")
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| Some(PathBuf::from("/etc/ssl/certs/ca-certificates.crt")))
        .filter(|p| p.is_file())
}

/// `node npm-cli.js install` of a tiny package (`ms`, no dependencies)
/// from the npm registry, chrooted, with npm 10 from the context: the
/// package is in the step's snapshot and `require`s.
#[test]
fn npm_installs_a_package_under_chroot() {
    const T: &str = "npm_installs_a_package_under_chroot";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(runtimes) = strata_testutil::env_or_skip(T, "STRATA_TEST_DEBIAN_RUNTIMES_TAR") else {
        return;
    };
    let Some(npm_tgz) = strata_testutil::env_or_skip(T, "STRATA_TEST_NPM_TGZ") else {
        return;
    };
    let registry = std::env::var("npm_config_registry")
        .unwrap_or_else(|_| "https://registry.npmjs.org/".into());
    let (host, port) = host_port(&registry).expect("a registry URL");
    if !reachable(T, &host, port) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let o = strata_in(&root, &["import", &runtimes, "strata-test/debian:runtimes"]);
    assert!(o.status.success(), "import: {}", text(&o.stderr));
    let ctx = tmp.path().join("ctx");
    // npm's tarball holds `package/...`: unpacked as the context's `npm/`.
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(&npm_tgz).expect("open npm tgz"));
    let mut archive = tar::Archive::new(gz);
    for entry in archive.entries().expect("npm tgz entries") {
        let mut entry = entry.expect("npm tgz entry");
        let path = entry.path().expect("entry path").into_owned();
        let Ok(rel) = path.strip_prefix("package") else {
            continue;
        };
        let at = ctx.join("npm").join(rel);
        std::fs::create_dir_all(at.parent().expect("a parent")).expect("mkdir");
        entry.unpack(&at).expect("unpack npm");
    }
    let ca = host_ca_bundle().expect("a CA bundle for the registry's certificates");
    std::fs::copy(&ca, ctx.join("ca.pem")).expect("copy the CA bundle");
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM strata-test/debian:runtimes AS app\n\
         ARG REGISTRY\n\
         COPY npm /npm\n\
         WORKDIR /app\n\
         RUN --mount=type=bind,source=ca.pem,target=/run/ca.pem \
             NODE_EXTRA_CA_CERTS=/run/ca.pem node /npm/bin/npm-cli.js install \
             --registry \"$REGISTRY\" --no-audit --no-fund --no-update-notifier ms@2.1.3 \
          && node -e 'console.log(\"ms says \" + require(\"ms\")(60000))'\n\
         FROM scratch\n\
         COPY --from=app /app/node_modules/ms/ /out/\n",
    )
    .expect("write Dockerfile");
    let out = tmp.path().join("out");
    let registry_arg = format!("REGISTRY={registry}");
    let mut flags = vec!["--build-arg".to_owned(), registry_arg];
    for proxy in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        if let Ok(v) = std::env::var(proxy) {
            flags.push("--build-arg".into());
            flags.push(format!("{proxy}={v}"));
        }
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let log = build_chroot(&root, &ctx, &out, &flags);
    assert!(has_step_line(&log, "ms says 1m"), "{log}");
    let manifest = std::fs::read_to_string(out.join("out/package.json")).expect("ms/package.json");
    assert!(manifest.contains("\"version\": \"2.1.3\""), "{manifest}");
    assert!(out.join("out/index.js").is_file());
}
