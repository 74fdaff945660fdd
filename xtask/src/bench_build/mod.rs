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
//! The modules: `options` reads the command line, `tools` drives the three builders (build, export, load,
//! clear, import), `scenarios` writes the contexts and measures the rows,
//! `report` renders the markdown table, `machine` describes where it ran.

mod machine;
mod options;
mod report;
mod scenarios;
mod tools;

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};

use options::Options;
use scenarios::run_bench;
use tools::progress;

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
}
