//! `cargo xtask bench build`: strata, BuildKit (`DOCKER_BUILDKIT=1 docker
//! build`) and Buildah (`buildah bud --isolation chroot`) side by side on the
//! same generated scenarios, in one run: medians, ratios to BuildKit, and
//! strata's peak RSS (from GNU time). Needs `.ci/testenv up` (dockerd and the
//! busybox fixture); writes a markdown table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

pub struct Options {
    pub runs: usize,
    /// Files and total bytes of the COPY scenario's context.
    pub files: usize,
    pub bytes: u64,
    pub out: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Strata,
    BuildKit,
    Buildah,
}

struct Env {
    strata: PathBuf,
    store: PathBuf,
    docker_host: String,
    work: PathBuf,
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Env {
    /// One build; returns seconds and (for strata) peak RSS in KiB.
    fn build(
        &self,
        tool: Tool,
        ctx: &Path,
        no_cache: bool,
        tag: &str,
    ) -> anyhow::Result<(f64, Option<u64>)> {
        let mut cmd = match tool {
            Tool::Strata => {
                let mut c = Command::new("/usr/bin/time");
                c.args(["-f", "%M", "-o"])
                    .arg(self.work.join("rss"))
                    .arg(&self.strata)
                    .args(["build", "-q", "-t", tag]);
                c.env("STRATA_ROOT", &self.store);
                c
            }
            Tool::BuildKit => {
                let mut c = Command::new("/usr/bin/docker");
                c.args(["build", "-q", "--network", "none", "-t", tag])
                    .env("DOCKER_BUILDKIT", "1")
                    .env("DOCKER_HOST", &self.docker_host);
                c
            }
            Tool::Buildah => {
                let mut c = Command::new("buildah");
                c.args(["bud", "-q", "--isolation", "chroot", "--layers", "-t", tag]);
                c
            }
        };
        if no_cache {
            cmd.arg("--no-cache");
        }
        cmd.arg(ctx);
        let start = Instant::now();
        run(&mut cmd)?;
        let secs = start.elapsed().as_secs_f64();
        let rss = if tool == Tool::Strata {
            std::fs::read_to_string(self.work.join("rss"))
                .ok()
                .and_then(|s| s.trim().lines().last()?.parse().ok())
        } else {
            None
        };
        Ok((secs, rss))
    }

    fn export(&self, tool: Tool, tag: &str) -> anyhow::Result<f64> {
        let dest = self.work.join("export.tar");
        let _ = std::fs::remove_file(&dest);
        let mut cmd = match tool {
            Tool::Strata => {
                // The image is in the store: a cached build re-exports it.
                let mut c = Command::new(&self.strata);
                c.args(["save", tag, "-o"])
                    .arg(&dest)
                    .env("STRATA_ROOT", &self.store);
                c
            }
            Tool::BuildKit => {
                let mut c = Command::new("/usr/bin/docker");
                c.args(["save", tag, "-o"])
                    .arg(&dest)
                    .env("DOCKER_HOST", &self.docker_host);
                c
            }
            Tool::Buildah => {
                let mut c = Command::new("buildah");
                c.args(["push", tag])
                    .arg(format!("oci-archive:{}", dest.display()));
                c
            }
        };
        let start = Instant::now();
        run(&mut cmd)?;
        Ok(start.elapsed().as_secs_f64())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Deterministic pseudo-random bytes (xorshift), so every run has the same tree.
fn fill(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn write_scenarios(work: &Path, opts: &Options) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    let multi = work.join("multistage");
    std::fs::create_dir_all(&multi)?;
    std::fs::write(
        multi.join("Dockerfile"),
        "FROM strata-test/busybox:latest AS a\nRUN echo a > /a\nFROM strata-test/busybox:latest AS b\nRUN echo b > /b\n\
         FROM strata-test/busybox:latest\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nENV X=1\nCMD [\"cat\", \"/a\", \"/b\"]\n",
    )?;
    let copy = work.join("copy");
    let files = copy.join("tree");
    std::fs::create_dir_all(&files)?;
    std::fs::write(
        copy.join("Dockerfile"),
        "FROM strata-test/busybox:latest\nCOPY . /ctx\n",
    )?;
    let per = (opts.bytes / opts.files.max(1) as u64).max(1) as usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; per];
    for i in 0..opts.files {
        let dir = files.join(format!("d{:03}", i % 200));
        std::fs::create_dir_all(&dir)?;
        fill(&mut buf, &mut seed);
        std::fs::write(dir.join(format!("f{i}")), &buf)?;
    }
    let small = work.join("small-files");
    std::fs::create_dir_all(&small)?;
    std::fs::write(
        small.join("Dockerfile"),
        "FROM strata-test/busybox:latest\nRUN mkdir /data && cd /data && for d in $(seq 1 300); do mkdir $d; for f in $(seq 1 100); do echo $d$f > $d/$f; done; done\n",
    )?;
    Ok(vec![
        ("multistage", multi),
        ("copy", copy),
        ("small-files", small),
    ])
}

pub fn run_bench(opts: &Options) -> anyhow::Result<String> {
    let top = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let strata = top.join("target/release/strata");
    if !strata.exists() {
        bail!("build strata first: cargo build --release");
    }
    let docker_host = std::env::var("STRATA_TEST_DOCKER_HOST")
        .context("source target/testenv/env.sh (after .ci/testenv up) first")?;
    let busybox =
        std::env::var("STRATA_TEST_BUSYBOX_TAR").context("STRATA_TEST_BUSYBOX_TAR is not set")?;
    let work = tempfile::tempdir()?;
    let env = Env {
        strata,
        store: work.path().join("store"),
        docker_host: docker_host.clone(),
        work: work.path().to_owned(),
    };
    // The same base image in all three tools.
    run(Command::new(&env.strata)
        .args(["import", &busybox, "strata-test/busybox:latest"])
        .env("STRATA_ROOT", &env.store))?;
    run(Command::new("/usr/bin/docker")
        .args(["import", &busybox, "strata-test/busybox:latest"])
        .env("DOCKER_HOST", &docker_host))?;
    let saved = work.path().join("base.tar");
    run(Command::new("/usr/bin/docker")
        .args(["save", "strata-test/busybox:latest", "-o"])
        .arg(&saved)
        .env("DOCKER_HOST", &docker_host))?;
    run(Command::new("buildah")
        .arg("pull")
        .arg(format!("docker-archive:{}", saved.display())))?;
    run(Command::new("buildah")
        .args(["tag"])
        .arg(format!("docker-archive:{}", saved.display()))
        .arg("strata-test/busybox:latest"))
    .ok();
    let scenarios = write_scenarios(work.path(), opts)?;
    let tools = [Tool::Strata, Tool::BuildKit, Tool::Buildah];
    let mut rows: Vec<(String, [f64; 3], Option<u64>)> = Vec::new();
    let mut measure = |label: String,
                       f: &mut dyn FnMut(Tool) -> anyhow::Result<(f64, Option<u64>)>|
     -> anyhow::Result<()> {
        let mut med = [0.0; 3];
        let mut rss = None;
        for (i, t) in tools.iter().enumerate() {
            let mut times = Vec::new();
            for _ in 0..opts.runs {
                let (s, r) = f(*t)?;
                times.push(s);
                if r.is_some() {
                    rss = rss.max(r);
                }
            }
            med[i] = median(times);
        }
        rows.push((label, med, rss));
        Ok(())
    };
    let (_, multi) = &scenarios[0];
    for t in tools {
        env.build(t, multi, true, "bench/multi")?;
    }
    measure("small multi-stage, fully cached rebuild".into(), &mut |t| {
        env.build(t, multi, false, "bench/multi")
    })?;
    let (_, copy) = &scenarios[1];
    let label = format!(
        "COPY . of {} files, {} MB: cold",
        opts.files,
        opts.bytes / 1_000_000
    );
    measure(label, &mut |t| env.build(t, copy, true, "bench/copy"))?;
    measure("  same: cached rebuild".into(), &mut |t| {
        env.build(t, copy, false, "bench/copy")
    })?;
    let changed = copy.join("tree/d000/f0");
    let mut n = 0u32;
    measure("  same: rebuild after changing one file".into(), &mut |t| {
        n += 1;
        std::fs::write(&changed, format!("changed {n}"))?;
        env.build(t, copy, false, "bench/copy")
    })?;
    measure("  export the image of the COPY build".into(), &mut |t| {
        Ok((env.export(t, "bench/copy")?, None))
    })?;
    let (_, small) = &scenarios[2];
    measure("RUN writing 30,000 small files, cold".into(), &mut |t| {
        env.build(t, small, true, "bench/small")
    })?;

    let mut md = String::new();
    writeln!(
        md,
        "| scenario | strata (s) | BuildKit (s) | Buildah (s) | strata / BuildKit | strata / Buildah | strata peak RSS |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    for (label, m, rss) in &rows {
        writeln!(
            md,
            "| {label} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
            m[0],
            m[1],
            m[2],
            m[0] / m[1],
            m[0] / m[2],
            rss.map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into())
        )?;
    }
    Ok(md)
}
