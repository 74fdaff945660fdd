//! `strata bake` end to end: `--print` against the reference's recorded
//! (and, with the reference builder, live) answers for the cases in
//! testdata/bake, and real builds: a base stage shared by three targets
//! runs once, the images equal separate `strata build`s, a `target:`
//! context, and one failing target among independent ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bake")
}

/// A case folder's name, command-line arguments (CASE/args, one per line)
/// and environment (CASE/env, KEY=VALUE lines).
type Case = (String, Vec<String>, Vec<(String, String)>);

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let dir = cases_dir().join(&name);
        let args = std::fs::read_to_string(dir.join("args"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect();
        let env = std::fs::read_to_string(dir.join("env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        out.push((name, args, env));
    }
    out
}

/// Runs a command in the case folder with only PATH, HOME (and the
/// given extra variables) plus the case's environment, as record.py runs
/// the reference.
fn run_in_case(
    cmd: &Path,
    pre: &[&str],
    case: &str,
    args: &[String],
    env: &[(String, String)],
    extra: &[(&str, &str)],
) -> Output {
    let mut c = Command::new(cmd);
    c.args(pre)
        .args(args)
        .current_dir(cases_dir().join(case))
        .env_clear();
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn print_matches_the_recorded_reference() {
    let cases = cases();
    assert!(cases.len() >= 8, "testdata/bake has too few cases");
    let mut failures = Vec::new();
    for (name, args, env) in &cases {
        let out = run_in_case(&strata(), &["bake", "--print"], name, args, env, &[]);
        let expected =
            std::fs::read_to_string(cases_dir().join(name).join("expected.json")).unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || got != expected {
            failures.push(format!(
                "{name}: exit {:?}\n--- strata\n{got}{}\n--- reference\n{expected}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same cases against the running reference, so a recorded answer
/// cannot go stale unnoticed.
#[test]
fn print_matches_the_live_reference() {
    let test = "print_matches_the_live_reference";
    let Some(host) = strata_testutil::reference_docker_host(test) else {
        return;
    };
    let mut failures = Vec::new();
    for (name, args, env) in cases() {
        let reference = run_in_case(
            Path::new("docker"),
            &["buildx", "bake", "--print"],
            &name,
            &args,
            &env,
            &[("DOCKER_HOST", &host)],
        );
        assert!(
            reference.status.success(),
            "{name}: the reference failed: {}",
            String::from_utf8_lossy(&reference.stderr)
        );
        let ours = run_in_case(&strata(), &["bake", "--print"], &name, &args, &env, &[]);
        if ours.stdout != reference.stdout {
            failures.push(format!(
                "{name}:\n--- strata\n{}{}\n--- reference\n{}",
                String::from_utf8_lossy(&ours.stdout),
                String::from_utf8_lossy(&ours.stderr),
                String::from_utf8_lossy(&reference.stdout)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn print_errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(tmp.path().join(name), text).unwrap();
    let bake = |args: &[&str]| {
        Command::new(strata())
            .arg("bake")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap()
    };
    let out = bake(&["--print"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("couldn't find a bake definition"));

    write(
        "docker-bake.hcl",
        "target \"a\" {\n  inherits = [\"b\"]\n}\n",
    );
    let out = bake(&["--print", "a"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed to find target b"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write("docker-bake.hcl", "target \"a\" {\n  bogus = 1\n}\n");
    let out = bake(&["--print", "a"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported argument \"bogus\""));

    write("docker-bake.hcl", "target \"a\" {\n  tags = [nope]\n}\n");
    let out = bake(&["--print", "a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("target a: tags") && err.contains("nope"),
        "{err}"
    );

    write(
        "docker-bake.hcl",
        "target \"a\" {\n  contexts = { x = \"target:a\" }\n}\n",
    );
    let out = bake(&["--print", "a"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot link to itself"));
}

/// The shared store set-up, plus this file's own helpers.
struct Env(strata_testutil::ImportedStore);

impl std::ops::Deref for Env {
    type Target = strata_testutil::ImportedStore;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Env {
    /// A fresh store with the busybox fixture imported.
    fn new(test: &str) -> Option<Self> {
        strata_testutil::ImportedStore::new(test, &strata()).map(Env)
    }

    fn write(&self, files: &[(&str, &str)]) {
        for (p, c) in files {
            std::fs::write(self.dir.join(p), c).unwrap();
        }
    }

    fn metadata(&self, file: &str) -> BTreeMap<String, serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join(file)).unwrap()).unwrap()
    }
}

const SHARED_DOCKERFILE: &str = "\
FROM strata-test/busybox AS base
RUN echo shared-step-ran && sleep 2 && echo base > /base.txt
FROM base AS one
RUN echo one > /one.txt
FROM base AS two
RUN echo two > /two.txt
FROM base AS three
COPY three.txt /three.txt
";

const SHARED_BAKE: &str = r#"
group "default" {
  targets = ["one", "two", "three"]
}
target "_common" {
  args = { SOURCE_DATE_EPOCH = "1600000000" }
}
target "one" {
  inherits = ["_common"]
  target   = "one"
  tags     = ["bake-test/one"]
}
target "two" {
  inherits = ["_common"]
  target   = "two"
  tags     = ["bake-test/two"]
}
target "three" {
  inherits = ["_common"]
  target   = "three"
  tags     = ["bake-test/three"]
}
"#;

/// Three targets in parallel share a base stage whose RUN sleeps: without
/// the once-gate all three would miss the cache together and run it three
/// times. Its output line is printed once, and the runs counted in the
/// metadata are that one plus each target's own RUN.
#[test]
fn shared_base_runs_once_and_images_equal_separate_builds() {
    let test = "shared_base_runs_once_and_images_equal_separate_builds";
    let Some(env) = Env::new(test) else { return };
    env.write(&[
        ("Dockerfile", SHARED_DOCKERFILE),
        ("three.txt", "three\n"),
        ("docker-bake.hcl", SHARED_BAKE),
    ]);
    let out = env.output(&[
        "bake",
        "--progress",
        "plain",
        "--metadata-file",
        "meta.json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ran_lines = stderr
        .lines()
        .filter(|l| {
            l.split_once(' ')
                .is_some_and(|(n, rest)| n.starts_with('#') && rest == "shared-step-ran")
        })
        .count();
    assert_eq!(ran_lines, 1, "the shared RUN's output:\n{stderr}");
    let meta = env.metadata("meta.json");
    assert_eq!(meta.len(), 3, "{meta:?}");
    let runs: u64 = meta
        .values()
        .map(|m| m["strata.steps.run"].as_u64().unwrap())
        .sum();
    // The shared RUN once, and the RUNs of `one` and `two`.
    assert_eq!(runs, 3, "{meta:?}");

    // The same targets built one by one in a fresh store.
    let Some(separate) = Env::new(test) else {
        return;
    };
    separate.write(&[("Dockerfile", SHARED_DOCKERFILE), ("three.txt", "three\n")]);
    for target in ["one", "two", "three"] {
        let out = separate.output(&[
            "build",
            "--progress",
            "plain",
            "--target",
            target,
            "--build-arg",
            "SOURCE_DATE_EPOCH=1600000000",
            "--iidfile",
            "iid",
            ".",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = std::fs::read_to_string(separate.dir.join("iid")).unwrap();
        assert_eq!(
            meta[target]["containerimage.config.digest"].as_str(),
            Some(id.trim()),
            "target {target}: bake and a separate build differ"
        );
    }
}

/// `contexts = { base = "target:one" }`: `one` is built first and its
/// image is what `FROM base` means; `one` is not requested, so it is a
/// linked target (cache only, no tag).
#[test]
fn target_context_builds_the_other_target_first() {
    let test = "target_context_builds_the_other_target_first";
    let Some(env) = Env::new(test) else { return };
    env.write(&[
        (
            "Dockerfile",
            "FROM strata-test/busybox\nRUN echo one > /one.txt\n",
        ),
        (
            "app.Dockerfile",
            "FROM base\nRUN cat /one.txt > /copied.txt\n",
        ),
        (
            "docker-bake.hcl",
            r#"
target "one" {
  tags = ["bake-test/linked"]
}
target "app" {
  dockerfile = "app.Dockerfile"
  contexts   = { base = "target:one" }
  tags       = ["bake-test/app"]
}
"#,
        ),
    ]);
    let out = env.output(&[
        "bake",
        "--progress",
        "plain",
        "--metadata-file",
        "meta.json",
        "app",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let meta = env.metadata("meta.json");
    assert!(
        meta.contains_key("one") && meta.contains_key("app"),
        "{meta:?}"
    );
    let one_id = meta["one"]["containerimage.config.digest"]
        .as_str()
        .unwrap();
    let inspect = |name: &str| -> serde_json::Value {
        let out = env.output(&["inspect", name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let layers = |v: &serde_json::Value| -> Vec<String> {
        let v = if v.is_array() { &v[0] } else { v };
        v["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    let app_layers = layers(&inspect("bake-test/app"));
    let one_layers = layers(&inspect(one_id));
    assert_eq!(app_layers.len(), one_layers.len() + 1);
    assert_eq!(app_layers[..one_layers.len()], one_layers[..]);
    // A linked target's output is the cache only: its tag is not set.
    assert!(
        !env.output(&["inspect", "bake-test/linked"])
            .status
            .success()
    );
}

/// One target fails; the independent one still finishes, the one built on
/// the failed one does not start, and the exit code says it.
#[test]
fn a_failing_target_does_not_stop_independent_ones() {
    let test = "a_failing_target_does_not_stop_independent_ones";
    let Some(env) = Env::new(test) else { return };
    env.write(&[
        (
            "good.Dockerfile",
            "FROM strata-test/busybox\nRUN sleep 1 && echo good > /good\n",
        ),
        ("bad.Dockerfile", "FROM strata-test/busybox\nRUN exit 3\n"),
        ("after.Dockerfile", "FROM bad\nRUN true\n"),
        (
            "docker-bake.hcl",
            r#"
group "default" {
  targets = ["good", "bad", "after"]
}
target "good" {
  dockerfile = "good.Dockerfile"
}
target "bad" {
  dockerfile = "bad.Dockerfile"
}
target "after" {
  dockerfile = "after.Dockerfile"
  contexts   = { bad = "target:bad" }
}
"#,
        ),
    ]);
    let out = env.output(&[
        "bake",
        "--progress",
        "plain",
        "--metadata-file",
        "meta.json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ERROR: target bad:"), "{stderr}");
    assert!(
        stderr.contains("ERROR: target after: target bad (contexts.bad) failed"),
        "{stderr}"
    );
    let meta = env.metadata("meta.json");
    assert_eq!(meta.keys().collect::<Vec<_>>(), ["good"], "{meta:?}");
}

/// Directory and `docker-image://` contexts (`strata build
/// --build-context`'s forms): `FROM NAME` and `COPY --from=NAME` read
/// them; a local path is the working directory's, as buildx takes it.
#[test]
fn directory_and_image_contexts() {
    let test = "directory_and_image_contexts";
    let Some(env) = Env::new(test) else { return };
    std::fs::create_dir_all(env.dir.join("files")).unwrap();
    env.write(&[
        ("files/f.txt", "from the directory\n"),
        (
            "Dockerfile",
            "FROM base\nCOPY --from=files f.txt /f.txt\nRUN cat /f.txt > /copied.txt\n",
        ),
        (
            "docker-bake.hcl",
            r#"
target "app" {
  contexts = { base = "docker-image://strata-test/busybox", files = "./files" }
  tags     = ["bake-test/contexts"]
}
"#,
        ),
    ]);
    let out = env.output(&["bake", "--progress", "plain", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run = env.output(&["run", "--rm", "bake-test/contexts", "cat", "/copied.txt"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "from the directory\n");
    // A directory that is not there is an error naming the target.
    env.write(&[(
        "docker-bake.hcl",
        "target \"app\" {\n  contexts = { files = \"./missing\" }\n}\n",
    )]);
    let out = env.output(&["bake", "app"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("target app") && stderr.contains("failed to get build context files"),
        "{stderr}"
    );
}

/// Keys strata cannot honour are refused before anything is built.
#[test]
fn unsupported_keys_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("Dockerfile"), "FROM scratch\n").unwrap();
    for (key, needle) in [
        ("annotations = [\"a=b\"]", "annotations are not supported"),
        ("attest = [\"type=sbom\"]", "attestations are not supported"),
        (
            "ulimits = [\"nofiles=1024\"]",
            "invalid ulimit type: nofiles",
        ),
        ("output = [\"type=docker\"]", "without dest"),
    ] {
        std::fs::write(
            tmp.path().join("docker-bake.hcl"),
            format!("target \"default\" {{\n  {key}\n}}\n"),
        )
        .unwrap();
        let out = Command::new(strata())
            .arg("bake")
            .current_dir(tmp.path())
            .env("STRATA_ROOT", tmp.path().join("store"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains("target default:") && err.contains(needle),
            "{key}: {err}"
        );
    }
}
