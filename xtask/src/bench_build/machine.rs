//! The machine and the tools a run was measured on, for the report's header.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::tools::{Env, run};

/// The machine and the tools, as one paragraph.
pub(super) struct Machine {
    pub(super) line: String,
    pub(super) tools: String,
    pub(super) commit: String,
}

pub(super) fn machine(env: &Env, top: &Path) -> Result<Machine> {
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

pub(super) fn utc_now() -> Result<String> {
    Ok(
        run(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_owned(),
    )
}
