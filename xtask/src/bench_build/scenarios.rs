//! The scenarios: the generated contexts, the examples, and the rows they
//! are measured as.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::machine::{machine, utc_now};
use super::options::Options;
use super::report::{Row, Target, render, thousands};
use super::tools::{
    BUSYBOX, Build, Env, Net, REFERENCE_DOCKER_HOST, Sample, TOOLS, Tool, progress, rotation,
};

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
        self.measure_tools(label, target, &TOOLS, prepare, timed)
    }

    /// [`Bench::measure`] for the `tools` that can do the row; the others'
    /// cells stay empty.
    fn measure_tools(
        &mut self,
        label: String,
        target: Target,
        tools: &[Tool],
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
            for tool in rotation(i).into_iter().filter(|t| tools.contains(t)) {
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
        self.rows.last().and_then(|r| r.medians()[0]).unwrap_or(0.0)
    }
}

fn no_prep(_: &Env, _: Tool, _: usize) -> Result<()> {
    Ok(())
}

const COPY_TAG: &str = "strata-bench/copy";
/// What the `load` rows tag: the COPY image again, loaded into the daemon.
const LOAD_TAG: &str = "strata-bench/load";
const MULTI_TAG: &str = "strata-bench/multi";
const RUN_TAG: &str = "strata-bench/run-files";
const PAR_TAGS: [&str; 4] = [
    "strata-bench/par0",
    "strata-bench/par1",
    "strata-bench/par2",
    "strata-bench/par3",
];

/// Runs every scenario `opts` selects; returns the markdown section (header
/// and table).
pub(super) fn run_bench(opts: &Options, top: &Path) -> Result<String> {
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

    let mut bench = Bench {
        env: &env,
        runs: opts.runs,
        rows: Vec::new(),
    };
    let w = work.path();
    let examples: &[Example] = if opts.no_examples || !opts.runs_scenario("examples") {
        &[]
    } else {
        &EXAMPLES
    };
    write_contexts(opts, top, w, examples)?;
    if opts.runs_scenario("multistage") {
        multistage(&mut bench, w)?;
    }
    let (copy, load) = (opts.runs_scenario("copy"), opts.runs_scenario("load"));
    if copy || load {
        copy_and_load(&mut bench, opts, w, copy, load)?;
    }
    if opts.runs_scenario("run-files") {
        run_files(&mut bench, w)?;
    }
    if opts.runs_scenario("parallel") {
        parallel(&mut bench, w)?;
    }
    for ex in examples {
        example(&mut bench, w, ex)?;
    }

    let mut tags: Vec<String> = [COPY_TAG, LOAD_TAG, MULTI_TAG, RUN_TAG]
        .into_iter()
        .chain(PAR_TAGS)
        .map(str::to_owned)
        .collect();
    tags.extend(examples.iter().map(example_tag));
    env.clean_up(&tags.iter().map(String::as_str).collect::<Vec<_>>())?;
    render(opts, &machine, &started, &bench.rows)
}

/// Writes the contexts of the scenarios that run, all before the first
/// timed build, so that no timed build shares the disk with their writeback.
fn write_contexts(opts: &Options, top: &Path, w: &Path, examples: &[Example]) -> Result<()> {
    progress(format_args!("writing the scenarios into {}", w.display()));
    if opts.runs_scenario("multistage") {
        write_file(
            &w.join("multistage/Dockerfile"),
            &format!(
                "FROM {BUSYBOX} AS a\nRUN echo a > /a\nFROM {BUSYBOX} AS b\nRUN echo b > /b\n\
                 FROM {BUSYBOX}\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nENV X=1\nCMD [\"cat\", \"/a\", \"/b\"]\n"
            ),
        )?;
    }
    if opts.runs_scenario("copy") || opts.runs_scenario("load") {
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
    }
    if opts.runs_scenario("run-files") {
        write_file(
            &w.join("run-files/Dockerfile"),
            &format!(
                "FROM {BUSYBOX} AS gen\n\
                 RUN mkdir /data && cd /data && for d in $(seq 1 300); do mkdir $d; for f in $(seq 1 100); do echo $d$f > $d/$f; done; done\n\
                 FROM {BUSYBOX}\nCOPY --from=gen /data /data\n"
            ),
        )?;
    }
    if opts.runs_scenario("parallel") {
        for k in 0..PAR_TAGS.len() {
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
    }
    for ex in examples {
        copy_dir(&top.join("examples").join(ex.name), &w.join(ex.name))?;
    }
    Ok(())
}

/// A small multi-stage build, every step cached.
fn multistage(bench: &mut Bench<'_>, w: &Path) -> Result<()> {
    let multi = Build {
        ctx: w.join("multistage"),
        tag: MULTI_TAG.into(),
        net: Net::None,
        load: false,
    };
    for tool in TOOLS {
        bench.env.build(tool, &multi)?;
    }
    bench.measure(
        "small multi-stage, fully cached rebuild".into(),
        Target::Ratio(0.5),
        &mut no_prep,
        &mut |env, t| env.build(t, &multi),
    )
}

/// The COPY of a large context: cold, cached, one file changed, exported;
/// and (`load`) its cached build loaded into the reference dockerd.
fn copy_and_load(
    bench: &mut Bench<'_>,
    opts: &Options,
    w: &Path,
    copy_rows: bool,
    load_row: bool,
) -> Result<()> {
    let copy = Build {
        ctx: w.join("copy"),
        tag: COPY_TAG.into(),
        net: Net::None,
        load: false,
    };
    if copy_rows {
        bench.measure(
            format!(
                "COPY of {} files / {} MB, cold",
                thousands(opts.files),
                opts.bytes / 1_000_000
            ),
            Target::Ratio(0.5),
            &mut |env, t, _| env.clear(t, &[COPY_TAG]),
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
            &mut |env, t| env.export(t, COPY_TAG),
        )?;
    }
    if load_row {
        // The timed builds find every step cached: what they spend is the load.
        let loading = Build {
            tag: LOAD_TAG.into(),
            load: true,
            ..copy
        };
        let can_load = [Tool::Strata, Tool::BuildKit];
        for tool in can_load {
            bench.env.build(tool, &loading)?;
        }
        // Under the COPY rows when they ran, else named in full.
        let label = if copy_rows {
            "  same".to_owned()
        } else {
            format!(
                "COPY of {} files / {} MB",
                thousands(opts.files),
                opts.bytes / 1_000_000
            )
        };
        bench.measure_tools(
            format!("{label}, `--load` of the cached build into dockerd"),
            Target::None,
            &can_load,
            // BuildKit's COPY image is the one it loads: both tags go, so
            // that the daemon has neither image before a run.
            &mut |env, _, _| env.unload(&[COPY_TAG, LOAD_TAG]),
            &mut |env, t| env.build(t, &loading),
        )?;
    }
    Ok(())
}

/// A RUN that writes many small files, copied into the final stage.
fn run_files(bench: &mut Bench<'_>, w: &Path) -> Result<()> {
    let run_files = Build {
        ctx: w.join("run-files"),
        tag: RUN_TAG.into(),
        net: Net::None,
        load: false,
    };
    bench.measure(
        "RUN writing 30,000 files + COPY --from, cold".into(),
        Target::Ratio(0.7),
        &mut |env, t, _| env.clear(t, &[RUN_TAG]),
        &mut |env, t| env.build(t, &run_files),
    )
}

/// Four different builds, each a small CI job (its own context copied in
/// and a step that writes files), in sequence and then at once.
fn parallel(bench: &mut Bench<'_>, w: &Path) -> Result<()> {
    let mut par = Vec::new();
    for (k, tag) in PAR_TAGS.iter().enumerate() {
        par.push(Build {
            ctx: w.join(format!("par{k}")),
            tag: (*tag).into(),
            net: Net::None,
            load: false,
        });
    }
    bench.measure(
        "4 different builds in sequence, cold (sum)".into(),
        Target::None,
        &mut |env, t, _| env.clear(t, &PAR_TAGS),
        &mut |env, t| env.build_in_sequence(t, &par),
    )?;
    let sequential = bench.last_strata_median();
    bench.measure(
        "  same 4 started at once on one store, cold (wall)".into(),
        Target::AtOnce {
            bound: 0.6,
            sequential,
        },
        &mut |env, t, _| env.clear(t, &PAR_TAGS),
        &mut |env, t| env.build_at_once(t, &par),
    )
}

fn example_tag(ex: &Example) -> String {
    format!("strata-bench/{}", ex.name)
}

/// One of `examples/`: cold, cached, one source file edited.
fn example(bench: &mut Bench<'_>, w: &Path, ex: &Example) -> Result<()> {
    let tag = example_tag(ex);
    let b = Build {
        ctx: w.join(ex.name),
        tag: tag.clone(),
        net: Net::Host,
        load: false,
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
    )
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
