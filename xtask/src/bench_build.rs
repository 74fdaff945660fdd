//! `cargo xtask bench build`: strata against the current reference builders,
//! BuildKit (`docker buildx build` on dockerd 28.5, BuildKit 0.25 inside) and
//! Buildah (`buildah build --isolation chroot --layers`), side by side in one
//! run on the same generated scenarios and the multi-stage `examples/`.
//!
//! Runs are interleaved: for run i every tool does the scenario once, in an
//! order that rotates with i, so a slow phase of a busy machine hits all tools
//! alike. The table holds medians, the ratios strata/BuildKit and
//! strata/Buildah next to the targets of issue #11, and strata's peak RSS
//! (GNU time's maximum resident set size over every strata process of the
//! row).
//!
//! Cold means the tool's own cache emptied first with its own commands, the
//! base images kept: strata `rmi` + `builder prune -af` + `prune -f`;
//! BuildKit `docker image rm` + `docker buildx prune -af`; Buildah `rmi` +
//! `rmi --prune`. Buildah gets a private storage root in the work dir; strata
//! a private `STRATA_ROOT`; the reference dockerd is shared, so only its build
//! cache and the `strata-bench/` tags are touched.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Where `../shared/tools/reference-docker.sh` serves dockerd 28.5.
const REFERENCE_DOCKER_HOST: &str = "unix:///opt/sid/run/docker28.sock";
/// A current docker CLI; the buildx plugin sits beside it in
/// /usr/local/lib/docker/cli-plugins.
const DOCKER_CLI: &str = "/usr/local/bin/docker";
const BUSYBOX: &str = "strata-test/busybox:latest";
const DEBIAN: &str = "strata-test/debian:bookworm";
/// The bound on strata's memory in every scenario.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

const USAGE: &str = "usage: cargo xtask bench build [--runs N] [--full] [--no-examples] [--out FILE] [--strata PATH]\n\
  --runs N       interleaved runs per tool and scenario (default 3; medians need at least 3)\n\
  --no-examples  leave out the examples/ rows (their cold builds install from the Debian mirror and take most of the run)\n\
  --full         the issue's size: COPY of 20,000 files / 500 MB (default: a tenth)\n\
  --out FILE     write the section into FILE (replacing this size's earlier section)\n\
  --strata PATH  the strata binary (default: target/release/strata under CARGO_TARGET_DIR or the checkout)\n\
Needs STRATA_TEST_BUSYBOX_TAR and STRATA_TEST_DEBIAN_TAR (source target/testenv/env.sh), the reference\n\
dockerd (../shared/tools/reference-docker.sh; STRATA_BENCH_DOCKER_HOST overrides its socket), buildah,\n\
/usr/bin/time and the Debian mirror (the examples install packages with apt-get).";

pub struct Options {
    pub runs: usize,
    /// The full size instead of a tenth of it.
    pub full: bool,
    /// Files and total bytes of the COPY scenario's context.
    pub files: usize,
    pub bytes: u64,
    pub out: Option<PathBuf>,
    pub strata: PathBuf,
    /// Leave out the `examples/` scenarios.
    pub no_examples: bool,
    /// The arguments as given, to print the exact command.
    pub args: Vec<String>,
}

impl Options {
    /// Parses the arguments after `bench build`.
    pub fn parse(args: &[String], top: &Path) -> Result<Options> {
        let mut runs = 3;
        let mut full = false;
        let mut no_examples = false;
        let mut out = None;
        let mut strata = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            match a.as_str() {
                "--runs" => {
                    let v = value("--runs")?;
                    runs = v
                        .parse()
                        .ok()
                        .filter(|&n: &usize| n >= 1)
                        .with_context(|| format!("--runs {v}: expected a number ≥ 1"))?;
                }
                "--full" => full = true,
                "--no-examples" => no_examples = true,
                "--out" => out = Some(PathBuf::from(value("--out")?)),
                "--strata" => strata = Some(PathBuf::from(value("--strata")?)),
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("bench build: unknown argument {other:?}\n{USAGE}"),
            }
        }
        let strata = match strata {
            Some(s) => s,
            None => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| top.join("target"));
                target.join("release").join("strata")
            }
        };
        if !strata.is_file() {
            bail!(
                "no strata binary at {}: build it first (cargo build --release -p strata) or pass --strata PATH",
                strata.display()
            );
        }
        let (files, bytes) = if full {
            (20_000, 500_000_000)
        } else {
            (2_000, 50_000_000)
        };
        Ok(Options {
            runs,
            full,
            no_examples,
            files,
            bytes,
            out,
            strata,
            args: args.to_vec(),
        })
    }

    fn size_name(&self) -> &'static str {
        if self.full { "full" } else { "small" }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Tool {
    Strata,
    BuildKit,
    Buildah,
}

const TOOLS: [Tool; 3] = [Tool::Strata, Tool::BuildKit, Tool::Buildah];

impl Tool {
    fn index(self) -> usize {
        match self {
            Tool::Strata => 0,
            Tool::BuildKit => 1,
            Tool::Buildah => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Strata => "strata",
            Tool::BuildKit => "BuildKit",
            Tool::Buildah => "Buildah",
        }
    }
}

/// The order of run `i`: strata, BuildKit, Buildah rotated by `i`.
fn rotation(i: usize) -> [Tool; 3] {
    let mut order = TOOLS;
    order.rotate_left(i % TOOLS.len());
    order
}

#[derive(Clone, Copy, PartialEq)]
enum Net {
    /// The scenario needs no network: BuildKit and strata get none.
    None,
    /// The scenario installs from the Debian mirror: every tool gets the host's.
    Host,
}

/// One build to run: its context (Dockerfile inside), the tag, the network.
struct Build {
    ctx: PathBuf,
    tag: String,
    net: Net,
}

/// One timed sample: seconds, and strata's peak RSS in KiB when measured.
struct Sample {
    secs: f64,
    rss_kib: Option<u64>,
}

struct Env {
    strata: PathBuf,
    store: PathBuf,
    buildah_root: PathBuf,
    buildah_runroot: PathBuf,
    docker_host: String,
    work: PathBuf,
    /// Distinguishes the GNU time output files of concurrent processes.
    serial: std::cell::Cell<u64>,
}

/// Runs a command to completion; its stderr is in the error when it fails.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for a build started with its output in `log`; the log is in the
/// error when it fails.
fn wait(mut child: Child, log: &Path, what: &str) -> Result<()> {
    let status = child
        .wait()
        .with_context(|| format!("waiting for {what}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        bail!("{what} failed ({status}):\n{text}");
    }
    Ok(())
}

impl Env {
    fn strata(&self) -> Command {
        let mut c = Command::new(&self.strata);
        c.env("STRATA_ROOT", &self.store);
        c
    }

    /// strata under GNU time, which writes the peak RSS (KiB) to `rss`.
    fn strata_timed(&self, rss: &Path) -> Command {
        let mut c = Command::new("/usr/bin/time");
        c.args(["-f", "%M", "-o"])
            .arg(rss)
            .arg(&self.strata)
            .env("STRATA_ROOT", &self.store);
        c
    }

    fn docker(&self) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        c.env("DOCKER_HOST", &self.docker_host);
        c
    }

    fn buildah(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(&self.buildah_root)
            .arg("--runroot")
            .arg(&self.buildah_runroot);
        c
    }

    fn rss_file(&self) -> PathBuf {
        let n = self.serial.get();
        self.serial.set(n + 1);
        self.work.join(format!("rss-{n}"))
    }

    /// The command that builds `b` with `tool`, its stdio captured.
    fn build_command(&self, tool: Tool, b: &Build, rss: &Path) -> Command {
        let mut cmd = match tool {
            Tool::Strata => {
                let mut c = self.strata_timed(rss);
                c.args(["build", "-q", "-t", &b.tag, "--network"]);
                c.arg(if b.net == Net::Host { "host" } else { "none" });
                c
            }
            Tool::BuildKit => {
                let mut c = self.docker();
                c.args(["buildx", "build", "--load", "-q", "-t", &b.tag, "--network"]);
                c.arg(if b.net == Net::Host { "host" } else { "none" });
                c
            }
            Tool::Buildah => {
                // Chroot isolation runs every step in the host's network; it
                // accepts no other.
                let mut c = self.buildah();
                c.args([
                    "build",
                    "-q",
                    "--isolation",
                    "chroot",
                    "--layers",
                    "-t",
                    &b.tag,
                ]);
                c
            }
        };
        cmd.arg(&b.ctx)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Builds `b` with `tool`, timed.
    fn build(&self, tool: Tool, b: &Build) -> Result<Sample> {
        let rss = self.rss_file();
        let mut cmd = self.build_command(tool, b, &rss);
        let start = Instant::now();
        run(&mut cmd).with_context(|| format!("{} building {}", tool.name(), b.ctx.display()))?;
        let secs = start.elapsed().as_secs_f64();
        Ok(Sample {
            secs,
            rss_kib: self.read_rss(tool, &rss)?,
        })
    }

    /// Builds every one of `builds` with `tool` one after the other; the
    /// time is their sum (the wall time of the sequence).
    fn build_in_sequence(&self, tool: Tool, builds: &[Build]) -> Result<Sample> {
        let mut total = Sample {
            secs: 0.0,
            rss_kib: None,
        };
        for b in builds {
            let s = self.build(tool, b)?;
            total.secs += s.secs;
            total.rss_kib = total.rss_kib.max(s.rss_kib);
        }
        Ok(total)
    }

    /// Starts every one of `builds` with `tool` at once; the time is the wall
    /// time until the last one ends.
    fn build_at_once(&self, tool: Tool, builds: &[Build]) -> Result<Sample> {
        let rss: Vec<PathBuf> = builds.iter().map(|_| self.rss_file()).collect();
        let mut commands: Vec<Command> = builds
            .iter()
            .zip(&rss)
            .map(|(b, r)| self.build_command(tool, b, r))
            .collect();
        // Output to files, not pipes: a child blocked on a full pipe while
        // another is waited for would distort the wall time.
        let mut logs = Vec::new();
        for (i, cmd) in commands.iter_mut().enumerate() {
            let log = self.work.join(format!("at-once-{i}.log"));
            let file = std::fs::File::create(&log)
                .with_context(|| format!("creating {}", log.display()))?;
            cmd.stdout(file.try_clone()?).stderr(file);
            logs.push(log);
        }
        let start = Instant::now();
        let mut children = Vec::new();
        for cmd in &mut commands {
            let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
            children.push(child);
        }
        // Wait for all before reporting the first failure: no build is left
        // running behind the next scenario's back.
        let results: Vec<Result<()>> = children
            .into_iter()
            .zip(&logs)
            .zip(builds)
            .map(|((child, log), b)| {
                wait(
                    child,
                    log,
                    &format!("{} building {}", tool.name(), b.ctx.display()),
                )
            })
            .collect();
        let secs = start.elapsed().as_secs_f64();
        for r in results {
            r?;
        }
        let mut peak = None;
        for r in &rss {
            peak = peak.max(self.read_rss(tool, r)?);
        }
        Ok(Sample {
            secs,
            rss_kib: peak,
        })
    }

    fn read_rss(&self, tool: Tool, rss: &Path) -> Result<Option<u64>> {
        if tool != Tool::Strata {
            return Ok(None);
        }
        let text = std::fs::read_to_string(rss)
            .with_context(|| format!("reading GNU time's output {}", rss.display()))?;
        // On failure GNU time writes a status line first; the figure is last.
        let kib = text
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("{}: no peak RSS in {text:?}", rss.display()))?;
        Ok(Some(kib))
    }

    /// Writes the image `tag` as a docker-loadable tar, timed.
    fn export(&self, tool: Tool, tag: &str) -> Result<Sample> {
        let dest = self.work.join("export.tar");
        if dest.exists() {
            std::fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
        }
        let rss = self.rss_file();
        let mut cmd = match tool {
            Tool::Strata => {
                let mut c = self.strata_timed(&rss);
                c.args(["save", tag, "-o"]).arg(&dest);
                c
            }
            Tool::BuildKit => {
                let mut c = self.docker();
                c.args(["save", tag, "-o"]).arg(&dest);
                c
            }
            Tool::Buildah => {
                let mut c = self.buildah();
                c.args(["push", "-q", tag])
                    .arg(format!("docker-archive:{}:{tag}", dest.display()));
                c
            }
        };
        let start = Instant::now();
        run(&mut cmd).with_context(|| format!("{} exporting {tag}", tool.name()))?;
        let secs = start.elapsed().as_secs_f64();
        Ok(Sample {
            secs,
            rss_kib: self.read_rss(tool, &rss)?,
        })
    }

    /// Empties `tool`'s build cache and removes `tags`, keeping the bases.
    fn clear(&self, tool: Tool, tags: &[&str]) -> Result<()> {
        for tag in tags {
            if self.has_image(tool, tag)? {
                match tool {
                    Tool::Strata => run(self.strata().args(["rmi", tag]))?,
                    Tool::BuildKit => run(self.docker().args(["image", "rm", "-f", tag]))?,
                    Tool::Buildah => run(self.buildah().args(["rmi", "-f", tag]))?,
                };
            }
        }
        match tool {
            Tool::Strata => {
                run(self.strata().args(["builder", "prune", "-af"]))?;
                run(self.strata().args(["prune", "-f"]))?;
            }
            Tool::BuildKit => {
                run(self.docker().args(["buildx", "prune", "-af"]))?;
            }
            Tool::Buildah => {
                // The intermediate images of `--layers` are its cache; with
                // the tags gone they are dangling.
                run(self.buildah().args(["rmi", "--prune"]))?;
            }
        }
        // A cold build starts from the bases, never from a pull.
        for base in [BUSYBOX, DEBIAN] {
            if !self.has_image(tool, base)? {
                bail!(
                    "{} lost its base image {base} while its cache was emptied",
                    tool.name()
                );
            }
        }
        Ok(())
    }

    /// Whether `tool` has an image named `name`.
    fn has_image(&self, tool: Tool, name: &str) -> Result<bool> {
        let mut cmd = match tool {
            Tool::Strata => {
                return Ok(!run(self.strata().args(["images", "-q", name]))?
                    .trim()
                    .is_empty());
            }
            Tool::BuildKit => {
                let mut c = self.docker();
                c.args(["image", "inspect", name]);
                c
            }
            Tool::Buildah => {
                let mut c = self.buildah();
                c.args(["inspect", "--type", "image", name]);
                c
            }
        };
        Ok(cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .with_context(|| format!("running {cmd:?}"))?
            .success())
    }

    /// The same busybox and Debian bases in all three tools.
    fn import_bases(&self, busybox: &Path, debian: &Path) -> Result<()> {
        for (tar, name) in [(busybox, BUSYBOX), (debian, DEBIAN)] {
            progress(format_args!("importing {name} into every tool"));
            run(self.strata().arg("import").arg(tar).arg(name))?;
            // The reference dockerd is shared: importing again would give the
            // tag a new image (a new creation time), so keep one that exists.
            let have = self.has_image(Tool::BuildKit, name)?;
            if !have {
                run(self.docker().arg("import").arg(tar).arg(name))?;
            }
            let saved = self.work.join("base.tar");
            run(self.docker().args(["save", name, "-o"]).arg(&saved))?;
            run(self
                .buildah()
                .args(["pull", "-q"])
                .arg(format!("docker-archive:{}", saved.display())))?;
            std::fs::remove_file(&saved)
                .with_context(|| format!("removing {}", saved.display()))?;
        }
        Ok(())
    }

    /// Removes what the run left in the shared reference dockerd and
    /// Buildah's private root (whose files root owns through overlay layers).
    fn clean_up(&self, tags: &[&str]) -> Result<()> {
        self.clear(Tool::BuildKit, tags)?;
        run(self.buildah().args(["rmi", "-a", "-f"]))?;
        Ok(())
    }
}

/// `20000` as `20,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A progress line on stderr; a closed stderr only loses the line.
fn progress(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
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

/// Writes `files` files of `bytes` in total under `dir`, 200 a directory.
fn write_tree(dir: &Path, files: usize, bytes: u64, mut seed: u64) -> Result<()> {
    let per = usize::try_from((bytes / files.max(1) as u64).max(1))?;
    let mut buf = vec![0u8; per];
    for i in 0..files {
        let sub = dir.join(format!("d{:03}", i / 200));
        std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
        fill(&mut buf, &mut seed);
        let f = sub.join(format!("f{i}"));
        std::fs::write(&f, &buf).with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), &dest).with_context(|| {
                format!("copying {} to {}", entry.path().display(), dest.display())
            })?;
        }
    }
    Ok(())
}

/// An example of `examples/` and the source file the "edited" row changes.
struct Example {
    name: &'static str,
    edit: &'static str,
    comment: &'static str,
}

const EXAMPLES: [Example; 2] = [
    Example {
        name: "hello-c",
        edit: "hello.c",
        comment: "/* edited by cargo xtask bench build, run {} */\n",
    },
    Example {
        name: "hello-python",
        edit: "app/render.py",
        comment: "# edited by cargo xtask bench build, run {}\n",
    },
];

/// What a row is measured against.
enum Target {
    /// strata / BuildKit at most this.
    Ratio(f64),
    /// strata's builds at once at most this fraction of the same in sequence
    /// (whose strata median is given).
    AtOnce {
        bound: f64,
        sequential: f64,
    },
    None,
}

struct Row {
    label: String,
    target: Target,
    /// Per tool, seconds of every run.
    times: [Vec<f64>; 3],
    rss_kib: Option<u64>,
}

impl Row {
    fn medians(&self) -> [f64; 3] {
        [0, 1, 2].map(|i| median(self.times[i].clone()))
    }
}

struct Bench<'a> {
    env: &'a Env,
    runs: usize,
    rows: Vec<Row>,
}

impl Bench<'_> {
    /// Measures one row: for each run, every tool in that run's order does
    /// `prepare` (untimed) and then `timed`.
    fn measure(
        &mut self,
        label: String,
        target: Target,
        prepare: &mut dyn FnMut(&Env, Tool, usize) -> Result<()>,
        timed: &mut dyn FnMut(&Env, Tool) -> Result<Sample>,
    ) -> Result<()> {
        let mut row = Row {
            label,
            target,
            times: [Vec::new(), Vec::new(), Vec::new()],
            rss_kib: None,
        };
        for i in 0..self.runs {
            for tool in rotation(i) {
                prepare(self.env, tool, i)?;
                let s = timed(self.env, tool)
                    .with_context(|| format!("scenario {:?}, run {}", row.label, i + 1))?;
                progress(format_args!(
                    "{} | run {}/{} | {}: {:.2} s",
                    row.label.trim(),
                    i + 1,
                    self.runs,
                    tool.name(),
                    s.secs
                ));
                row.times[tool.index()].push(s.secs);
                row.rss_kib = row.rss_kib.max(s.rss_kib);
            }
        }
        self.rows.push(row);
        Ok(())
    }

    fn last_strata_median(&self) -> f64 {
        self.rows.last().map_or(0.0, |r| r.medians()[0])
    }
}

fn no_prep(_: &Env, _: Tool, _: usize) -> Result<()> {
    Ok(())
}

/// Runs every scenario; returns the markdown section (header and table).
pub fn run_bench(opts: &Options, top: &Path) -> Result<String> {
    let busybox = std::env::var_os("STRATA_TEST_BUSYBOX_TAR")
        .map(PathBuf::from)
        .context("STRATA_TEST_BUSYBOX_TAR is not set: source target/testenv/env.sh first")?;
    let debian = std::env::var_os("STRATA_TEST_DEBIAN_TAR")
        .map(PathBuf::from)
        .context("STRATA_TEST_DEBIAN_TAR is not set: source target/testenv/env.sh first")?;
    let docker_host = std::env::var("STRATA_BENCH_DOCKER_HOST")
        .unwrap_or_else(|_| REFERENCE_DOCKER_HOST.to_owned());
    let work = tempfile::Builder::new()
        .prefix("strata-bench-")
        .tempdir()
        .context("creating the work dir")?;
    let env = Env {
        strata: opts.strata.clone(),
        store: work.path().join("strata-root"),
        buildah_root: work.path().join("buildah/root"),
        buildah_runroot: work.path().join("buildah/run"),
        docker_host,
        work: work.path().to_owned(),
        serial: std::cell::Cell::new(0),
    };
    let machine = machine(&env, top)?;
    let started = utc_now()?;
    env.import_bases(&busybox, &debian)?;

    let copy_tag = "strata-bench/copy";
    let multi_tag = "strata-bench/multi";
    let run_tag = "strata-bench/run-files";
    let par_tags = [
        "strata-bench/par0",
        "strata-bench/par1",
        "strata-bench/par2",
        "strata-bench/par3",
    ];
    let w = work.path();

    progress(format_args!("writing the scenarios into {}", w.display()));
    write_file(
        &w.join("multistage/Dockerfile"),
        &format!(
            "FROM {BUSYBOX} AS a\nRUN echo a > /a\nFROM {BUSYBOX} AS b\nRUN echo b > /b\n\
             FROM {BUSYBOX}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nENV X=1\nCMD [\"cat\", \"/a\", \"/b\"]\n"
        ),
    )?;
    write_file(
        &w.join("copy/Dockerfile"),
        &format!("FROM {BUSYBOX}\nCOPY . /ctx\n"),
    )?;
    write_tree(
        &w.join("copy/tree"),
        opts.files,
        opts.bytes,
        0x9e37_79b9_7f4a_7c15,
    )?;
    write_file(
        &w.join("run-files/Dockerfile"),
        &format!(
            "FROM {BUSYBOX} AS gen\n\
             RUN mkdir /data && cd /data && for d in $(seq 1 300); do mkdir $d; for f in $(seq 1 100); do echo $d$f > $d/$f; done; done\n\
             FROM {BUSYBOX}\nCOPY --from=gen /data /data\n"
        ),
    )?;
    // Four different builds, each a small CI job: its own context copied in
    // and a step that writes files.
    for (k, _) in par_tags.iter().enumerate() {
        let dir = w.join(format!("par{k}"));
        write_file(
            &dir.join("Dockerfile"),
            &format!(
                "FROM {BUSYBOX}\nCOPY src /src\n\
                 RUN mkdir /out && cd /out && for d in $(seq 1 50); do mkdir $d; for f in $(seq 1 100); do echo job{k} $d $f > $d/$f; done; done\n"
            ),
        )?;
        write_tree(
            &dir.join("src"),
            opts.files / 4,
            opts.bytes / 8,
            0x2545_f491_4f6c_dd1d ^ k as u64,
        )?;
    }
    let examples: &[Example] = if opts.no_examples { &[] } else { &EXAMPLES };
    for ex in examples {
        copy_dir(&top.join("examples").join(ex.name), &w.join(ex.name))?;
    }

    let mut bench = Bench {
        env: &env,
        runs: opts.runs,
        rows: Vec::new(),
    };

    let multi = Build {
        ctx: w.join("multistage"),
        tag: multi_tag.into(),
        net: Net::None,
    };
    for tool in TOOLS {
        env.build(tool, &multi)?;
    }
    bench.measure(
        "small multi-stage, fully cached rebuild".into(),
        Target::Ratio(0.5),
        &mut no_prep,
        &mut |env, t| env.build(t, &multi),
    )?;

    let copy = Build {
        ctx: w.join("copy"),
        tag: copy_tag.into(),
        net: Net::None,
    };
    bench.measure(
        format!(
            "COPY of {} files / {} MB, cold",
            thousands(opts.files),
            opts.bytes / 1_000_000
        ),
        Target::Ratio(0.5),
        &mut |env, t, _| env.clear(t, &[copy_tag]),
        &mut |env, t| env.build(t, &copy),
    )?;
    bench.measure(
        "  same, fully cached rebuild".into(),
        Target::Ratio(0.2),
        &mut no_prep,
        &mut |env, t| env.build(t, &copy),
    )?;
    let changed = w.join("copy/tree/d000/f0");
    bench.measure(
        "  same, one file changed".into(),
        Target::Ratio(0.25),
        &mut |_, t, i| write_file(&changed, &format!("changed for {} in run {i}", t.name())),
        &mut |env, t| env.build(t, &copy),
    )?;
    bench.measure(
        "  same, export to a docker-loadable tar".into(),
        Target::Ratio(0.2),
        &mut no_prep,
        &mut |env, t| env.export(t, copy_tag),
    )?;

    let run_files = Build {
        ctx: w.join("run-files"),
        tag: run_tag.into(),
        net: Net::None,
    };
    bench.measure(
        "RUN writing 30,000 files + COPY --from, cold".into(),
        Target::Ratio(0.7),
        &mut |env, t, _| env.clear(t, &[run_tag]),
        &mut |env, t| env.build(t, &run_files),
    )?;

    let par: Vec<Build> = par_tags
        .iter()
        .enumerate()
        .map(|(k, tag)| Build {
            ctx: w.join(format!("par{k}")),
            tag: (*tag).into(),
            net: Net::None,
        })
        .collect();
    bench.measure(
        "4 different builds in sequence, cold (sum)".into(),
        Target::None,
        &mut |env, t, _| env.clear(t, &par_tags),
        &mut |env, t| env.build_in_sequence(t, &par),
    )?;
    let sequential = bench.last_strata_median();
    bench.measure(
        "  same 4 started at once on one store, cold (wall)".into(),
        Target::AtOnce {
            bound: 0.6,
            sequential,
        },
        &mut |env, t, _| env.clear(t, &par_tags),
        &mut |env, t| env.build_at_once(t, &par),
    )?;

    let mut example_tags = Vec::new();
    for ex in examples {
        let tag = format!("strata-bench/{}", ex.name);
        let b = Build {
            ctx: w.join(ex.name),
            tag: tag.clone(),
            net: Net::Host,
        };
        bench.measure(
            format!("examples/{}, cold", ex.name),
            Target::Ratio(1.0),
            &mut |env, t, _| env.clear(t, &[tag.as_str()]),
            &mut |env, t| env.build(t, &b),
        )?;
        bench.measure(
            "  same, fully cached rebuild".into(),
            Target::Ratio(1.0),
            &mut no_prep,
            &mut |env, t| env.build(t, &b),
        )?;
        let source = w.join(ex.name).join(ex.edit);
        let original = std::fs::read_to_string(&source)
            .with_context(|| format!("reading {}", source.display()))?;
        bench.measure(
            format!("  same, {} edited", ex.edit),
            Target::Ratio(1.0),
            &mut |_, t, i| {
                let mark = ex.comment.replace("{}", &format!("{i} {}", t.name()));
                write_file(&source, &format!("{original}{mark}"))
            },
            &mut |env, t| env.build(t, &b),
        )?;
        example_tags.push(tag);
    }

    let mut tags: Vec<&str> = vec![copy_tag, multi_tag, run_tag];
    tags.extend(par_tags);
    tags.extend(example_tags.iter().map(String::as_str));
    env.clean_up(&tags)?;
    render(opts, &machine, &started, &bench.rows)
}

/// The machine and the tools, as one paragraph.
struct Machine {
    line: String,
    tools: String,
    commit: String,
}

fn machine(env: &Env, top: &Path) -> Result<Machine> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("reading /proc/cpuinfo")?;
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading the kernel release")?
        .trim()
        .to_owned();
    let fs = filesystem_of(&env.work)?;
    let line = format!(
        "{cpu}, {cores} cores, {:.1} GiB memory, Linux {kernel}, work dir on {fs}",
        mem_kib as f64 / (1024.0 * 1024.0)
    );

    let docker_server = run(env
        .docker()
        .args(["version", "-f", "{{.Server.Version}}"]))
    .with_context(|| {
        format!(
            "the reference dockerd at {} does not answer: start it with ../shared/tools/reference-docker.sh",
            env.docker_host
        )
    })?;
    let buildx = run(env.docker().args(["buildx", "version"]))?;
    let buildkit = run(env.docker().args(["buildx", "inspect"]))?
        .lines()
        .find_map(|l| l.trim().strip_prefix("BuildKit version:"))
        .map_or("unknown".to_owned(), |v| v.trim().to_owned());
    let buildah = run(Command::new("buildah").arg("version"))?
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map_or("unknown".to_owned(), |v| v.trim().to_owned());
    let strata_version = run(Command::new(&env.strata).arg("--version"))?;
    let commit = git_commit(top)?;
    let tools = format!(
        "{} (commit {commit}, binary {}); dockerd {} with {} (BuildKit as the builder reports it: {buildkit}); Buildah {buildah} (chroot isolation)",
        strata_version.trim(),
        env.strata.display(),
        docker_server.trim(),
        buildx.trim(),
    );
    Ok(Machine {
        line,
        tools,
        commit,
    })
}

/// The short commit of the checkout, marked when the tree has changes.
fn git_commit(top: &Path) -> Result<String> {
    let head = run(Command::new("git")
        .arg("-C")
        .arg(top)
        .args(["rev-parse", "--short", "HEAD"]))?;
    let status = run(Command::new("git").arg("-C").arg(top).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))?;
    let dirty = if status.trim().is_empty() {
        ""
    } else {
        " with uncommitted changes"
    };
    Ok(format!("{}{dirty}", head.trim()))
}

/// The filesystem type and device of the mount that holds `path`.
fn filesystem_of(path: &Path) -> Result<String> {
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS] - FSTYPE SOURCE SUPEROPTS
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(mount), Some(dash)) = (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let mount = mount.replace("\\040", " ");
        if !path.starts_with(&mount) {
            continue;
        }
        let fstype = fields.get(dash + 1).copied().unwrap_or("?");
        let source = fields.get(dash + 2).copied().unwrap_or("?");
        let len = mount.len();
        if best.as_ref().is_none_or(|(l, _)| len >= *l) {
            best = Some((len, format!("{fstype} ({source} on {mount})")));
        }
    }
    best.map(|(_, d)| d)
        .with_context(|| format!("no mount holds {}", path.display()))
}

fn utc_now() -> Result<String> {
    Ok(
        run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_owned(),
    )
}

fn render(opts: &Options, machine: &Machine, started: &str, rows: &[Row]) -> Result<String> {
    let mut md = String::new();
    let size = if opts.full {
        "the issue's size"
    } else {
        "a tenth of the issue's size; `--full` for 20,000 files / 500 MB"
    };
    writeln!(
        md,
        "### COPY of {} files / {} MB ({size})\n",
        thousands(opts.files),
        opts.bytes / 1_000_000
    )?;
    let runs = if opts.runs >= 3 {
        format!("medians of {} interleaved runs", opts.runs)
    } else {
        format!(
            "{} interleaved run{} (fewer than 3: not a median, not for publishing)",
            opts.runs,
            if opts.runs == 1 { "" } else { "s" }
        )
    };
    writeln!(
        md,
        "Measured {started} to {} on commit {}; {runs}; wall-clock seconds; a ratio below 1 means strata is faster.\n",
        utc_now()?,
        machine.commit
    )?;
    writeln!(md, "Machine: {}.\n", machine.line)?;
    writeln!(md, "Tools: {}.\n", machine.tools)?;
    let mut command = String::from(
        "cargo build --release -p strata && source target/testenv/env.sh && cargo xtask bench build",
    );
    for a in &opts.args {
        command.push(' ');
        command.push_str(a);
    }
    writeln!(md, "Command: `{command}`\n")?;
    writeln!(
        md,
        "| scenario | strata (s) | BuildKit (s) | Buildah (s) | strata / BuildKit | target | met | strata / Buildah | strata peak RSS |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|")?;
    for row in rows {
        let m = row.medians();
        let ratio = m[0] / m[1];
        let rss_ok = row.rss_kib.is_none_or(|k| k < RSS_LIMIT_KIB);
        let (target, met) = match row.target {
            Target::Ratio(bound) => (format!("≤ {bound}"), Some(ratio <= bound)),
            Target::AtOnce { bound, sequential } => {
                let share = m[0] / sequential;
                (
                    format!("at once / in sequence {share:.2}, ≤ {bound}"),
                    Some(share <= bound),
                )
            }
            Target::None => ("—".to_owned(), None),
        };
        let met = match (met, rss_ok) {
            (Some(true), true) => "yes",
            (Some(false), _) => "no",
            (Some(true), false) => "no (RSS)",
            (None, true) => "—",
            (None, false) => "no (RSS)",
        };
        writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2} | {ratio:.2} | {target} | {met} | {:.2} | {} |",
            row.label,
            m[0],
            m[1],
            m[2],
            m[0] / m[2],
            row.rss_kib
                .map(|k| format!("{:.0} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "—".into())
        )?;
    }
    writeln!(
        md,
        "\nTargets are issue #11's (strata / BuildKit, and strata's peak RSS under 100 MiB in every row). \
         Cold: each tool's build cache emptied with its own commands before every timed build, the bases kept. \
         strata and BuildKit build with `--network none` except the examples, which install from the Debian mirror and run with \
         `--network host` in every tool (the mirror adds variance to their cold rows); Buildah's chroot isolation \
         always uses the host's network. Export: `strata save`, `docker save`, `buildah push docker-archive:`. \
         The four builds: each copies its own context ({} files / {} MB) and writes 5,000 files.",
        thousands(opts.files / 4),
        opts.bytes / 8 / 1_000_000
    )?;
    Ok(md)
}

/// Writes `section` into `path` between this size's markers: replaces an
/// earlier section of the same size, else appends; creates the file if absent.
pub fn write_section(path: &Path, size: &str, section: &str) -> Result<()> {
    let begin = format!("<!-- cargo xtask bench build: {size} -->");
    let end = format!("<!-- end of cargo xtask bench build: {size} -->");
    let block = format!("{begin}\n{section}{end}\n");
    let doc = match std::fs::read_to_string(path) {
        Ok(old) => match (old.find(&begin), old.find(&end)) {
            (Some(b), Some(e)) if b < e => {
                let tail = &old[e + end.len()..];
                let tail = tail.strip_prefix('\n').unwrap_or(tail);
                format!("{}{block}{tail}", &old[..b])
            }
            (None, None) => format!("{}\n\n{block}", old.trim_end()),
            _ => bail!(
                "{}: the markers of the {size} section are unpaired; fix them by hand",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("# Benchmarks\n\n{block}")
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    strata_oci::atomic_write(path, doc.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `cargo xtask bench build ARGS`.
pub fn main(args: &[String], top: &Path) -> Result<()> {
    let opts = Options::parse(args, top)?;
    let section = run_bench(&opts, top)?;
    if let Some(out) = &opts.out {
        write_section(out, opts.size_name(), &section)?;
        progress(format_args!(
            "wrote the {} section of {}",
            opts.size_name(),
            out.display()
        ));
    }
    std::io::stdout()
        .write_all(section.as_bytes())
        .context("writing the table to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_gives_every_tool_every_position() {
        let orders: Vec<[Tool; 3]> = (0..3).map(rotation).collect();
        for pos in 0..3 {
            let at: Vec<Tool> = orders.iter().map(|o| o[pos]).collect();
            for t in TOOLS {
                assert!(at.contains(&t), "{t:?} never at position {pos}");
            }
        }
        assert_eq!(rotation(0), TOOLS);
    }

    #[test]
    fn thousands_separates_groups() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(500), "500");
        assert_eq!(thousands(2000), "2,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 4.0);
    }

    #[test]
    fn write_section_replaces_only_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("B.md");
        std::fs::write(&f, "# B\n\nintro\n").unwrap();
        write_section(&f, "small", "S1\n").unwrap();
        write_section(&f, "full", "F1\n").unwrap();
        write_section(&f, "small", "S2\n").unwrap();
        let doc = std::fs::read_to_string(&f).unwrap();
        assert!(doc.starts_with("# B\n\nintro\n"), "{doc}");
        assert!(doc.contains("S2\n") && !doc.contains("S1"), "{doc}");
        assert!(doc.contains("F1\n"), "{doc}");
        assert!(
            doc.find("S2").unwrap() < doc.find("F1").unwrap(),
            "the small section keeps its place: {doc}"
        );
    }

    #[test]
    fn options_refuse_unknown_and_bad_values() {
        let top = Path::new("/nonexistent");
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = Options::parse(&args(&["--fast"]), top).err().unwrap();
        assert!(e.to_string().contains("unknown argument"), "{e}");
        let e = Options::parse(&args(&["--runs", "0"]), top).err().unwrap();
        assert!(e.to_string().contains("--runs 0"), "{e}");
        let e = Options::parse(&args(&["--out"]), top).err().unwrap();
        assert!(e.to_string().contains("--out needs a value"), "{e}");
        let e = Options::parse(&args(&["--strata", "/nonexistent/strata"]), top)
            .err()
            .unwrap();
        assert!(e.to_string().contains("no strata binary"), "{e}");
    }
}
