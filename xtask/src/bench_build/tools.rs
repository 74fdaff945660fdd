//! The three builders under test and how each is driven: the commands that
//! build, export, load, clear a cache and import the bases, timed.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// A progress line on stderr; a closed stderr only loses the line.
pub(super) fn progress(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where `../shared/tools/reference-docker.sh` serves dockerd 28.5.
pub(super) const REFERENCE_DOCKER_HOST: &str = "unix:///opt/sid/run/docker28.sock";
/// A current docker CLI; the buildx plugin sits beside it in
/// /usr/local/lib/docker/cli-plugins.
const DOCKER_CLI: &str = "/usr/local/bin/docker";
pub(super) const BUSYBOX: &str = "strata-test/busybox:latest";
pub(super) const DEBIAN: &str = "strata-test/debian:bookworm";

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Tool {
    Strata,
    BuildKit,
    Buildah,
}

pub(super) const TOOLS: [Tool; 3] = [Tool::Strata, Tool::BuildKit, Tool::Buildah];

impl Tool {
    pub(super) fn index(self) -> usize {
        match self {
            Tool::Strata => 0,
            Tool::BuildKit => 1,
            Tool::Buildah => 2,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::Strata => "strata",
            Tool::BuildKit => "BuildKit",
            Tool::Buildah => "Buildah",
        }
    }
}

/// The order of run `i`: strata, BuildKit, Buildah rotated by `i`.
pub(super) fn rotation(i: usize) -> [Tool; 3] {
    let mut order = TOOLS;
    order.rotate_left(i % TOOLS.len());
    order
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Net {
    /// The scenario needs no network: BuildKit and strata get none.
    None,
    /// The scenario installs from the Debian mirror: every tool gets the host's.
    Host,
}

/// One build to run: its context (Dockerfile inside), the tag, the network.
pub(super) struct Build {
    pub(super) ctx: PathBuf,
    pub(super) tag: String,
    pub(super) net: Net,
    /// Also load the image into the reference dockerd (`--load`; BuildKit
    /// always does).
    pub(super) load: bool,
}

/// One timed sample: seconds, and strata's peak RSS in KiB when measured.
pub(super) struct Sample {
    pub(super) secs: f64,
    pub(super) rss_kib: Option<u64>,
}

pub(super) struct Env {
    pub(super) strata: PathBuf,
    pub(super) store: PathBuf,
    pub(super) buildah_root: PathBuf,
    pub(super) buildah_runroot: PathBuf,
    pub(super) docker_host: String,
    pub(super) work: PathBuf,
    /// Distinguishes the GNU time output files of concurrent processes.
    pub(super) serial: std::cell::Cell<u64>,
}

/// Runs a command to completion; its stderr is in the error when it fails.
pub(super) fn run(cmd: &mut Command) -> Result<String> {
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
    pub(super) fn strata(&self) -> Command {
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

    pub(super) fn docker(&self) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        c.env("DOCKER_HOST", &self.docker_host);
        c
    }

    pub(super) fn buildah(&self) -> Command {
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
                if b.load {
                    c.arg("--load").env("DOCKER_HOST", &self.docker_host);
                }
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
    pub(super) fn build(&self, tool: Tool, b: &Build) -> Result<Sample> {
        if b.load && tool == Tool::Buildah {
            // containers/image's docker-daemon: transport talks to
            // /var/run/docker.sock whatever DOCKER_HOST says, and `buildah
            // push` has no option naming another daemon.
            bail!("Buildah cannot load into the reference dockerd");
        }
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
    pub(super) fn build_in_sequence(&self, tool: Tool, builds: &[Build]) -> Result<Sample> {
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
    pub(super) fn build_at_once(&self, tool: Tool, builds: &[Build]) -> Result<Sample> {
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
    pub(super) fn export(&self, tool: Tool, tag: &str) -> Result<Sample> {
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
    pub(super) fn clear(&self, tool: Tool, tags: &[&str]) -> Result<()> {
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

    /// Removes from the reference dockerd the images `tags` name, with every
    /// other tag they have, so that the next `--load` of them really loads.
    pub(super) fn unload(&self, tags: &[&str]) -> Result<()> {
        for tag in tags {
            if self.has_image(Tool::BuildKit, tag)? {
                let id = run(self
                    .docker()
                    .args(["image", "inspect", "-f", "{{.Id}}", tag]))?;
                run(self.docker().args(["image", "rm", "-f", id.trim()]))?;
            }
        }
        Ok(())
    }

    /// Whether `tool` has an image named `name`.
    pub(super) fn has_image(&self, tool: Tool, name: &str) -> Result<bool> {
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
    pub(super) fn import_bases(&self, busybox: &Path, debian: &Path) -> Result<()> {
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
    pub(super) fn clean_up(&self, tags: &[&str]) -> Result<()> {
        self.clear(Tool::BuildKit, tags)?;
        run(self.buildah().args(["rmi", "-a", "-f"]))?;
        Ok(())
    }
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
}
