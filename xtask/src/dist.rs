//! `cargo xtask dist`: the shipped binary. A statically linked, stripped
//! `x86_64-unknown-linux-musl` build with the `dist` profile (Cargo.toml),
//! `aarch64-unknown-linux-musl` too when its rust-std and a musl C cross
//! compiler are installed; each is checked with `file` and `ldd` to be static
//! and stripped, and its size and build time are reported. Then it stages the
//! build context of strata's own image (`Containerfile` at the repository
//! root): `target/dist/context/` with the x86_64 binary, the host's CA bundle
//! and the Containerfile as `Dockerfile`, all with the HEAD commit's time as
//! mtime, so that the same commit gives the same image ID.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

/// The CA bundle copied into the image (Debian's ca-certificates).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

struct Target {
    triple: &'static str,
    /// The C compiler for the target's C dependencies (ring, zstd, xz,
    /// blake3), as the cc crate looks for it, and the package that has it.
    cc: &'static str,
    cc_package: &'static str,
}

const X86_64: Target = Target {
    triple: "x86_64-unknown-linux-musl",
    cc: "musl-gcc",
    cc_package: "musl-tools",
};

const AARCH64: Target = Target {
    triple: "aarch64-unknown-linux-musl",
    // Debian has no aarch64 musl cross compiler package; a musl.cc or
    // crosstool-ng toolchain provides this name.
    cc: "aarch64-linux-musl-gcc",
    cc_package: "(none in Debian: a musl cross toolchain, e.g. from musl.cc)",
};

pub fn run(out: &mut dyn Write, top: &Path) -> anyhow::Result<()> {
    let target_dir = target_dir(top)?;
    let x86 = build(out, top, &target_dir, &X86_64)?;
    match missing(&AARCH64) {
        Some(why) => writeln!(out, "dist: aarch64 skipped: {why}")?,
        None => {
            build(out, top, &target_dir, &AARCH64)?;
        }
    }
    let context = stage_context(top, &target_dir, &x86)?;
    writeln!(
        out,
        "dist: image context staged in {}\n  build it: strata build -t strata:dev {}",
        context.display(),
        context.display()
    )?;
    Ok(())
}

/// Why `t` cannot be built here, if it cannot.
fn missing(t: &Target) -> Option<String> {
    let sysroot = Command::new("rustc").args(["--print", "sysroot"]).output();
    let has_std = sysroot.is_ok_and(|o| {
        let root = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        Path::new(&root)
            .join("lib/rustlib")
            .join(t.triple)
            .join("lib")
            .is_dir()
    });
    if !has_std {
        return Some(format!(
            "the {0} rust-std is not installed (`rustup target add {0}`)",
            t.triple
        ));
    }
    if which(t.cc).is_none() {
        return Some(format!(
            "no C compiler `{}` on PATH for the C dependencies (ring, zstd, xz, blake3); install {}",
            t.cc, t.cc_package
        ));
    }
    None
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn target_dir(top: &Path) -> anyhow::Result<PathBuf> {
    let o = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(top)
        .output()
        .context("running cargo metadata")?;
    if !o.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).context("cargo metadata JSON")?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// Builds, checks and reports one target; returns the binary's path.
fn build(
    out: &mut dyn Write,
    top: &Path,
    target_dir: &Path,
    t: &Target,
) -> anyhow::Result<PathBuf> {
    if let Some(why) = missing(t) {
        bail!("cannot build {}: {why}", t.triple);
    }
    // The cc crate finds `t.cc` by itself (its musl prefixes); `missing`
    // checked that it is there.
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--locked", "--profile", "dist", "--bin", "strata"])
        .args(["--target", t.triple])
        .current_dir(top);
    writeln!(out, "dist: building {} (profile dist)", t.triple)?;
    let started = Instant::now();
    let status = cmd.status().context("running cargo build")?;
    let took = started.elapsed();
    if !status.success() {
        bail!("cargo build --target {} failed ({status})", t.triple);
    }
    let bin = target_dir.join(t.triple).join("dist").join("strata");
    check_static(&bin)?;
    let size = std::fs::metadata(&bin)
        .with_context(|| format!("{}", bin.display()))?
        .len();
    writeln!(
        out,
        "dist: {}: {} bytes ({:.1} MiB), static, stripped; cargo build took {}",
        bin.display(),
        size,
        size as f64 / (1024.0 * 1024.0),
        seconds(took)
    )?;
    Ok(bin)
}

fn seconds(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64())
}

/// `file` must call it statically linked and stripped, and `ldd` must find
/// no dynamic dependencies.
fn check_static(bin: &Path) -> anyhow::Result<()> {
    let file = Command::new("file")
        .arg("-b")
        .arg(bin)
        .output()
        .context("running `file` (Debian package `file`)")?;
    let file_says = String::from_utf8_lossy(&file.stdout).trim().to_owned();
    if !file.status.success() {
        bail!("file {} failed: {file_says}", bin.display());
    }
    // `static-pie linked` is what file(1) says of a static PIE.
    if !(file_says.contains("statically linked") || file_says.contains("static-pie linked")) {
        bail!("{} is not static; file says: {file_says}", bin.display());
    }
    if file_says.contains("not stripped") || file_says.contains("with debug_info") {
        bail!(
            "{} still has symbols; file says: {file_says}",
            bin.display()
        );
    }
    let ldd = Command::new("ldd")
        .arg(bin)
        .output()
        .context("running `ldd`")?;
    let ldd_says = format!(
        "{}{}",
        String::from_utf8_lossy(&ldd.stdout),
        String::from_utf8_lossy(&ldd.stderr)
    );
    // glibc's ldd exits 1 with "not a dynamic executable" for a static
    // binary, and prints "statically linked" for a static PIE.
    if !(ldd_says.contains("not a dynamic executable") || ldd_says.contains("statically linked")) {
        bail!(
            "{} has dynamic dependencies; ldd says: {}",
            bin.display(),
            ldd_says.trim()
        );
    }
    Ok(())
}

/// `target/dist/context`: Dockerfile (the root Containerfile), `strata`,
/// `ca-certificates.crt`, each with the HEAD commit time as mtime.
fn stage_context(top: &Path, target_dir: &Path, bin: &Path) -> anyhow::Result<PathBuf> {
    let context = target_dir.join("dist").join("context");
    if context.exists() {
        std::fs::remove_dir_all(&context)
            .with_context(|| format!("removing {}", context.display()))?;
    }
    std::fs::create_dir_all(&context).with_context(|| format!("{}", context.display()))?;
    if !Path::new(CA_BUNDLE).is_file() {
        bail!("{CA_BUNDLE} is missing: install Debian's ca-certificates to stage the image");
    }
    let mtime = commit_time(top)?;
    for (from, name, mode) in [
        (top.join("Containerfile"), "Dockerfile", 0o644),
        (bin.to_owned(), "strata", 0o755),
        (PathBuf::from(CA_BUNDLE), "ca-certificates.crt", 0o644),
    ] {
        let to = context.join(name);
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", to.display()))?;
        std::fs::File::options()
            .write(true)
            .open(&to)
            .and_then(|f| f.set_modified(mtime))
            .with_context(|| format!("setting the mtime of {}", to.display()))?;
    }
    Ok(context)
}

fn commit_time(top: &Path) -> anyhow::Result<SystemTime> {
    let o = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(top)
        .output()
        .context("running git log")?;
    let secs: u64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .with_context(|| format!("{}: no HEAD commit time from git", top.display()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}
