//! Project chores, run as `cargo xtask NAME`:
//! - `test [--allow-skips] [ARGS]`: fixtures and services up, the whole test
//!   suite (a test that cannot get its fixture fails, unless `--allow-skips`),
//!   services down
//!   (the README's test command; the work is in `.ci/test`, bash because CI needs
//!   it before anything compiles).
//! - `example`: build examples/hello-c with strata, `docker load` and run it.
//! - `services up|down`: start or stop the test fixtures and services by hand.
//! - `bench layers [SIZE_MB]`: layer creation throughput next to pigz and zstd.
//! - `module-cycles [CRATE_DIR...]`: import cycles between the modules of each
//!   crate (default: all of them); exits 1 when there is one.
//! - `fuzz CRATE TARGET [SECONDS]`: `cargo fuzz run` on `crates/CRATE/fuzz`
//!   for SECONDS (default 600) on stable with `RUSTC_BOOTSTRAP=1`, e.g.
//!   `cargo xtask fuzz strata-frontend parse`.

mod bench_build;
mod bench_layers;
mod module_cycles;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

fn top() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script(name: &str, args: &[String]) -> anyhow::Result<ExitCode> {
    let status = Command::new("bash")
        .arg(top().join(".ci").join(name))
        .args(args)
        .status()?;
    Ok(ExitCode::from(
        status.code().unwrap_or(1).clamp(0, 255) as u8
    ))
}

fn main() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => script("test", &args[1..]),
        Some("example") => script("example", &args[1..]),
        Some("services") => script("testenv", &args[1..]),
        Some("module-cycles") => {
            let dirs: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
            let clean = module_cycles::run(&mut std::io::stdout(), &top(), &dirs)?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some("fuzz") => {
            let (Some(krate), Some(target)) = (args.get(1), args.get(2)) else {
                anyhow::bail!("usage: cargo xtask fuzz CRATE TARGET [SECONDS]");
            };
            let seconds: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(600);
            let status = Command::new("cargo")
                .args(["fuzz", "run", target, "--"])
                .arg(format!("-max_total_time={seconds}"))
                .current_dir(top().join("crates").join(krate).join("fuzz"))
                .env("RUSTC_BOOTSTRAP", "1")
                .status()?;
            Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ))
        }
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("layers") => {
                let mut opts = bench_layers::Options::default();
                if let Some(mb) = args.get(2) {
                    opts.size = mb.parse::<u64>()? * 1_000_000;
                }
                bench_layers::run(&mut std::io::stdout(), &opts)?;
                Ok(ExitCode::SUCCESS)
            }
            Some("build") => {
                let rest = &args[2..];
                let full = rest.iter().any(|a| a == "--full");
                let runs = rest
                    .iter()
                    .position(|a| a == "--runs")
                    .and_then(|i| rest.get(i + 1))
                    .map(|r| r.parse())
                    .transpose()?
                    .unwrap_or(3);
                let (files, bytes) = if full {
                    (20_000, 500_000_000)
                } else {
                    (2_000, 50_000_000)
                };
                let opts = bench_build::Options {
                    runs,
                    files,
                    bytes,
                    out: top().join("BENCHMARKS.md"),
                };
                let table = bench_build::run_bench(&opts)?;
                let command = format!(
                    "cargo build --release && .ci/testenv up && source target/testenv/env.sh && cargo xtask bench build --runs {runs}{}",
                    if full { " --full" } else { "" }
                );
                let doc = format!(
                    "# Benchmarks\n\nstrata, BuildKit (`DOCKER_BUILDKIT=1 docker build`, docker.io 20.10) and Buildah \
                     (`buildah bud --isolation chroot`, 1.28) side by side in one run on the same generated scenarios; \
                     medians of {runs} runs, wall-clock seconds, ratios below 1 mean strata is faster. \
                     Machine: 2 cores, 24 GiB.\n\nReproduce: `{command}`\n\n{table}\nNotes: without `--full` the COPY context is 2,000 files / 50 MB, a tenth of \
                     the issue's 20,000 files / 500 MB; `--full` runs that. Export is `strata save` vs `docker save` vs \
                     `buildah push oci-archive:`. BuildKit builds with `--network none`, strata and Buildah with the host \
                     network (Buildah's chroot isolation allows nothing else); no scenario uses the network.\n"
                );
                strata_oci::atomic_write(&opts.out, doc.as_bytes())?;
                std::io::Write::write_all(&mut std::io::stdout(), doc.as_bytes())?;
                Ok(ExitCode::SUCCESS)
            }
            _ => anyhow::bail!(
                "usage: cargo xtask bench layers [SIZE_MB] | bench build [--runs N] [--full]"
            ),
        },
        _ => anyhow::bail!(
            "usage: cargo xtask test|example|services up|down|bench layers|module-cycles"
        ),
    }
}
