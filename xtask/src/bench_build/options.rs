//! The command line of `cargo xtask bench build`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The names `--only` takes, one per group of rows, in the order they run.
pub const SCENARIOS: [&str; 6] = [
    "multistage",
    "copy",
    "load",
    "run-files",
    "parallel",
    "examples",
];

const USAGE: &str = "usage: cargo xtask bench build [--runs N] [--full] [--no-examples] [--out FILE] [--strata PATH] [--only SCENARIO]...\n\
  --runs N       interleaved runs per tool and scenario (default 3; medians need at least 3)\n\
  --no-examples  leave out the examples/ rows (their cold builds install from the Debian mirror and take most of the run)\n\
  --full         the issue's size: COPY of 20,000 files / 500 MB (default: a tenth)\n\
  --out FILE     write the section into FILE (replacing this size's earlier section)\n\
  --strata PATH  the strata binary (default: target/release/strata under CARGO_TARGET_DIR or the checkout)\n\
  --only NAME    run only this scenario (repeatable): multistage, copy, load, run-files, parallel, examples\n\
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
    /// The scenarios to run (`--only`); empty runs every one.
    pub only: Vec<String>,
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
        let mut only = Vec::new();
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
                "--only" => {
                    let name = value("--only")?;
                    if !SCENARIOS.contains(&name.as_str()) {
                        bail!(
                            "--only {name}: no such scenario (there are {})",
                            SCENARIOS.join(", ")
                        );
                    }
                    only.push(name);
                }
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
            only,
            files,
            bytes,
            out,
            strata,
            args: args.to_vec(),
        })
    }

    pub fn size_name(&self) -> &'static str {
        if self.full { "full" } else { "small" }
    }

    /// Whether the scenario `name` (one of [`SCENARIOS`]) is to run.
    pub fn runs_scenario(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let e = Options::parse(&args(&["--only", "lod"]), top)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("--only lod: no such scenario"),
            "{e}"
        );
    }
}
