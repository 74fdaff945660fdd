//! Project chores, run as `cargo xtask NAME`:
//! - `test [ARGS]`: fixtures and services up, the whole test suite, services down
//!   (the README's test command; the work is in `.ci/test`, bash because CI needs
//!   it before anything compiles).
//! - `example`: build examples/hello-c with strata, `docker load` and run it.
//! - `services up|down`: start or stop the test fixtures and services by hand.
//! - `bench layers [SIZE_MB]`: layer creation throughput next to pigz and zstd.

mod bench_layers;

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
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("layers") => {
                let mut opts = bench_layers::Options::default();
                if let Some(mb) = args.get(2) {
                    opts.size = mb.parse::<u64>()? * 1_000_000;
                }
                bench_layers::run(&mut std::io::stdout(), &opts)?;
                Ok(ExitCode::SUCCESS)
            }
            _ => anyhow::bail!("usage: cargo xtask bench layers [SIZE_MB]"),
        },
        _ => anyhow::bail!("usage: cargo xtask test|example|services up|down|bench layers"),
    }
}
