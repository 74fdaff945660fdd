//! Project chores, run as `cargo xtask NAME`:
//! - `test [--allow-skips] [ARGS]`: fixtures and services up, the whole test
//!   suite (a test that cannot get its fixture fails, unless `--allow-skips`),
//!   services down
//!   (the README's test command; the work is in `.ci/test`, bash because CI needs
//!   it before anything compiles).
//! - `dist`: the static, stripped musl release binary (x86_64; aarch64 where
//!   the toolchain allows), checked with `file`/`ldd`, and the build context
//!   of strata's own image in `target/dist/context` (see dist.rs).
//! - `example`: build examples/hello-c with strata, `docker load` and run it.
//! - `services up|down`: start or stop the test fixtures and services by hand.
//! - `bench layers [SIZE_MB]`: layer creation throughput next to pigz and zstd.
//! - `bench build [--runs N] [--full] [--out FILE] [--strata PATH] [--only SCENARIO]`: strata
//!   against BuildKit 0.25 (dockerd 28.5) and Buildah, interleaved, medians
//!   (see bench_build/).
//! - `module-cycles [CRATE_DIR...]`: import cycles between the modules of each
//!   crate (default: all of them); exits 1 when there is one.
//! - `fuzz CRATE TARGET [SECONDS]`: `cargo fuzz run` on `crates/CRATE/fuzz`
//!   for SECONDS (default 600) on stable with `RUSTC_BOOTSTRAP=1`, e.g.
//!   `cargo xtask fuzz strata-frontend parse`.

mod bench_build;
mod bench_layers;
mod dist;
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
        Some("dist") => {
            if let Some(extra) = args.get(1) {
                anyhow::bail!("cargo xtask dist takes no arguments (got {extra})");
            }
            dist::run(&mut std::io::stdout(), &top())?;
            Ok(ExitCode::SUCCESS)
        }
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
                bench_build::main(&args[2..], &top())?;
                Ok(ExitCode::SUCCESS)
            }
            _ => anyhow::bail!(
                "usage: cargo xtask bench layers [SIZE_MB] | bench build [--runs N] [--full] [--out FILE] [--strata PATH] [--only SCENARIO]"
            ),
        },
        _ => anyhow::bail!(
            "usage: cargo xtask test|example|services up|down|fuzz|bench layers|bench build|module-cycles"
        ),
    }
}
