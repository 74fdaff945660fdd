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
//!
//! The modules: `tools` drives the three builders (build, export, load,
//! clear, import), `scenarios` writes the contexts and measures the rows,
//! `report` renders the markdown table, `machine` describes where it ran.

mod machine;
mod report;
mod scenarios;
mod tools;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use scenarios::{SCENARIOS, run_bench};

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

    fn size_name(&self) -> &'static str {
        if self.full { "full" } else { "small" }
    }

    /// Whether the scenario `name` (one of [`SCENARIOS`]) is to run.
    fn runs_scenario(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

/// A progress line on stderr; a closed stderr only loses the line.
fn progress(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "{line}");
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
        let e = Options::parse(&args(&["--only", "lod"]), top)
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("--only lod: no such scenario"),
            "{e}"
        );
    }
}
