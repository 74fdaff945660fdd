//! End-to-end tests of the build checks with the real binary:
//! `strata build --check` on every case of `testdata/lint/` next to
//! `docker buildx build --check` on the reference (BuildKit 0.25, at
//! `STRATA_TEST_REFERENCE_DOCKER_HOST`), and the warnings a normal build
//! prints and records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/lint")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("testdata/lint exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("Dockerfile").exists())
        .collect();
    cases.sort();
    cases
}

fn build_args(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.join("build-args"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| ["--build-arg".to_owned(), l.trim().to_owned()])
        .collect()
}

/// Runs strata with a store of its own under `root`.
fn run_strata(root: &Path, args: &[&str], extra: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(strata());
    cmd.env("STRATA_ROOT", root).args(args).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running strata")
}

/// (rule, line) of each warning in a `result.json`, whether it has a
/// `buildError`, and the lines warned about (with repeats).
fn findings(json: &[u8], who: &str, case: &str) -> (BTreeSet<(String, u64)>, bool, Vec<u64>) {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "{case}: {who} printed no JSON ({e}): {}",
            String::from_utf8_lossy(json)
        )
    });
    let all: Vec<(String, u64)> = v["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|w| {
                    (
                        w["ruleName"].as_str().unwrap_or_default().to_owned(),
                        w["location"]["ranges"][0]["start"]["line"]
                            .as_u64()
                            .unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let lines = all.iter().map(|w| w.1).collect();
    (
        all.into_iter().collect(),
        v.get("buildError").is_some(),
        lines,
    )
}

#[test]
#[expect(
    clippy::print_stderr,
    reason = "the agreement counts are the test's report"
)]
fn check_agrees_with_the_reference() {
    let test = "check_agrees_with_the_reference";
    let Some(host) = strata_testutil::env_or_skip(test, "STRATA_TEST_REFERENCE_DOCKER_HOST") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = cases();
    assert!(cases.len() >= 40, "the corpus has {} cases", cases.len());
    let (mut files_equal, mut pairs_equal, mut pairs_total, mut texts_equal, mut texts) =
        (0, 0, 0, 0, 0);
    let mut failures = Vec::new();
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let dir = case.to_string_lossy().into_owned();
        let args = build_args(case);
        let ours = run_strata(
            tmp.path(),
            &["build", "--check", "--format", "json", &dir],
            &args,
            &[],
        );
        let theirs = Command::new("docker")
            .env("DOCKER_HOST", &host)
            .args(["buildx", "build", "--call", "check,format=json"])
            .args(&args)
            .arg(&dir)
            .output()
            .expect("running docker buildx");
        let (our_set, our_error, _) = findings(&ours.stdout, "strata", &name);
        let (their_set, their_error, lines) = findings(&theirs.stdout, "the reference", &name);
        pairs_total += their_set.len();
        pairs_equal += our_set.intersection(&their_set).count();
        if our_set == their_set && our_error == their_error {
            files_equal += 1;
        } else {
            failures.push(format!(
                "{name}:\n  strata:    {our_set:?} error={our_error}\n  reference: {their_set:?} error={their_error}"
            ));
        }
        if ours.status.code() != theirs.status.code() {
            failures.push(format!(
                "{name}: exit {:?}, the reference's {:?}",
                ours.status.code(),
                theirs.status.code()
            ));
        }
        // The text form, where no two warnings share a line (the
        // reference's order among those is not stable).
        let unique: BTreeSet<u64> = lines.iter().copied().collect();
        if !their_error && unique.len() == lines.len() {
            texts += 1;
            let ours = run_strata(tmp.path(), &["build", "--check", &dir], &args, &[]);
            let theirs = Command::new("docker")
                .env("DOCKER_HOST", &host)
                .args(["buildx", "build", "--check"])
                .args(&args)
                .arg(&dir)
                .output()
                .expect("running docker buildx");
            if ours.stdout == theirs.stdout {
                texts_equal += 1;
            } else {
                failures.push(format!(
                    "{name}: text differs\n--- strata\n{}\n--- reference\n{}",
                    String::from_utf8_lossy(&ours.stdout),
                    String::from_utf8_lossy(&theirs.stdout)
                ));
            }
        }
    }
    eprintln!(
        "{files_equal}/{} files agree; {pairs_equal}/{pairs_total} (rule, line) pairs of the reference found; {texts_equal}/{texts} text outputs identical",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A case written to a fresh directory.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("writing the case");
    }
    dir
}

#[test]
fn check_text_counts_and_exit_codes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("store");
    let clean = context(&[("Dockerfile", "FROM scratch\nCMD [\"x\"]\n")]);
    let out = run_strata(
        &root,
        &["build", "--check", &clean.path().to_string_lossy()],
        &[],
        &[],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Check complete, no warnings found.\n"
    );
    assert_eq!(out.status.code(), Some(0));

    let two = context(&[("Dockerfile", "FROM scratch\nMAINTAINER me\nCMD x\n")]);
    let dir = two.path().to_string_lossy().into_owned();
    let out = run_strata(&root, &["build", "--call", "check", &dir], &[], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Check complete, 2 warnings have been found!\n"),
        "{text}"
    );
    assert!(text.contains("\nWARNING: MaintainerDeprecated - https://docs.docker.com/go/dockerfile/rule/maintainer-deprecated/\nMaintainer instruction is deprecated in favor of using label\n"), "{text}");
    assert!(text.contains("/Dockerfile:2\n--------------------\n   1 |     FROM scratch\n   2 | >>> MAINTAINER me\n"), "{text}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "buildx exits 1 when a check fires"
    );
    let out = run_strata(
        &root,
        &["build", "--call", "check,ignorestatus=true", &dir],
        &[],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    // error=true through the build arg: the error follows the warnings.
    let args = [
        "--build-arg".to_owned(),
        "BUILDKIT_DOCKERFILE_CHECK=error=true".to_owned(),
    ];
    let out = run_strata(&root, &["build", "--check", &dir], &args, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "ERROR: lint violation found for rules: JSONArgsRecommended, MaintainerDeprecated"
        ),
        "{err}"
    );
    // rawjson progress selects the JSON results.
    let out = run_strata(
        &root,
        &["build", "--check", "--progress", "rawjson", &dir],
        &[],
        &[],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON results");
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(2));
    // Usage errors.
    let out = run_strata(&root, &["build", "--call", "outline", &dir], &[], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_strata(&root, &["build", "--format", "json", &dir], &[], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_hints_a_misspelled_stage() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let case = context(&[(
        "Dockerfile",
        "FROM scratch AS build\nCOPY Dockerfile /\nFROM scratch\nCOPY --from=biuld /Dockerfile /\n",
    )]);
    let out = run_strata(
        tmp.path(),
        &["build", "--check", &case.path().to_string_lossy()],
        &[],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("NOTE: COPY --from=biuld names no stage, so it is pulled as an image (did you mean build?) (line 4)"),
        "{text}"
    );
}

#[test]
fn build_lists_warnings_and_records_them() {
    let test = "build_lists_warnings_and_records_them";
    if !strata_testutil::require_root(test) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let case = context(&[(
        "Dockerfile",
        "FROM scratch\nCOPY Dockerfile /\nCMD run\nENV A b\n",
    )]);
    let dir = case.path().to_string_lossy().into_owned();
    let meta = tmp.path().join("meta.json");
    let out = run_strata(
        &tmp.path().join("store"),
        &[
            "build",
            "--progress",
            "plain",
            "--metadata-file",
            &meta.to_string_lossy(),
            &dir,
        ],
        &[],
        &[("BUILDX_METADATA_WARNINGS", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("\n 2 warnings found (use docker --debug to expand):\n - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 3)\n - LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 4)\n"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).expect("JSON");
    let warnings = v["buildx.build.warnings"]
        .as_array()
        .expect("warnings recorded");
    assert_eq!(warnings.len(), 2);
    assert_eq!(warnings[0]["range"][0]["start"]["line"], 3);
    assert_eq!(
        warnings[0]["url"],
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    );

    // Without BUILDX_METADATA_WARNINGS, as buildx: no record.
    let out = run_strata(
        &tmp.path().join("store"),
        &[
            "build",
            "--progress",
            "plain",
            "--metadata-file",
            &meta.to_string_lossy(),
            &dir,
        ],
        &[],
        &[],
    );
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata file")).expect("JSON");
    assert!(v.get("buildx.build.warnings").is_none());

    // error=true stops the build before any step.
    let failing = context(&[("Dockerfile", "# check=error=true\nFROM scratch\nCMD run\n")]);
    let out = run_strata(
        &tmp.path().join("store"),
        &[
            "build",
            "--progress",
            "plain",
            &failing.path().to_string_lossy(),
        ],
        &[],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("lint violation found for rules: JSONArgsRecommended"),
        "{err}"
    );
}
