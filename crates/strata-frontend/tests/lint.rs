//! The lint corpus (`testdata/lint/CASE/`) against what the reference
//! (BuildKit 0.25 via `docker buildx build --call check,format=json`)
//! reported for each case, recorded in `CASE/reference.json` by
//! `testdata/lint/record.py`: the same rules, on the same lines, with the
//! same messages, and an error exactly where the reference stopped with one.
//! The live comparison with the reference is the end-to-end `tests/checks.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_frontend::lint::{LintOptions, Scope, lint};
use strata_frontend::{BuildInputs, Ignore};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/lint")
}

/// (line, rule, detail), sorted.
type Findings = Vec<(usize, String, String)>;

fn reference(case: &Path) -> (Findings, bool) {
    let text = fs_err_read(&case.join("reference.json"));
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", case.join("reference.json").display()));
    let mut found: Findings = v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    (
                        w["line"].as_u64().unwrap_or(0) as usize,
                        w["rule"].as_str().unwrap_or_default().to_owned(),
                        w["detail"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    (found, v["error"].as_bool().unwrap_or(false))
}

fn fs_err_read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn build_args(case: &Path) -> BTreeMap<String, String> {
    let p = case.join("build-args");
    if !p.exists() {
        return BTreeMap::new();
    }
    fs_err_read(&p)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
#[expect(
    clippy::print_stderr,
    reason = "the agreement counts are the test's report"
)]
fn corpus_matches_the_reference() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("testdata/lint exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let mut failures = Vec::new();
    let mut pairs = 0;
    for case in &cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let source = fs_err_read(&case.join("Dockerfile"));
        let ignore = case.join(".dockerignore").exists().then(|| {
            Ignore::parse(&fs_err_read(&case.join(".dockerignore"))).expect("valid .dockerignore")
        });
        let inputs = BuildInputs {
            build_args: build_args(case),
            build_platform: "linux/amd64".parse().expect("platform"),
            target_platform: "linux/amd64".parse().expect("platform"),
        };
        let opts = LintOptions {
            inputs: &inputs,
            target: None,
            scope: Scope::Check,
            base_env: &|_| None,
            base_platform: &|_| None,
            ignore: ignore.as_ref(),
        };
        let report = lint(&source, "Dockerfile", &opts);
        let mut ours: Findings = report
            .warnings
            .iter()
            .map(|w| (w.line(), w.rule.name.to_owned(), w.detail.clone()))
            .collect();
        ours.sort();
        let (theirs, their_error) = reference(case);
        pairs += theirs.len();
        if ours != theirs {
            failures.push(format!(
                "{name}:\n  strata:    {ours:?}\n  reference: {theirs:?}"
            ));
        }
        if report.error.is_some() != their_error {
            failures.push(format!(
                "{name}: strata error {:?}, reference error: {their_error}",
                report.error
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from the reference:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} cases, {pairs} warnings, all equal to the reference",
        cases.len()
    );
}
