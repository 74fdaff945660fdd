//! BuildKit's own Dockerfile frontend test vectors (vendored in
//! `testdata/buildkit`, see its README): every `envVarTest` line for
//! all/Unix platforms and every `wordsTest` line must hold, every parser test
//! file must dump to its recorded AST, and every negative case must be refused.

use std::path::PathBuf;

/// BuildKit's Dockerfile frontend test data, vendored in the top-level
/// `testdata/` with its licence.
fn buildkit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/buildkit/frontend/dockerfile")
}

fn shell_dir() -> PathBuf {
    buildkit_dir().join("shell")
}

#[test]
fn env_var_test_vectors() {
    let dir = shell_dir();
    let text = std::fs::read_to_string(dir.join("envVarTest")).unwrap();
    let env = |k: &str| -> Option<String> {
        match k {
            "PWD" => Some("/home".into()),
            "SHELL" => Some("bash".into()),
            "KOREAN" => Some("한국어".into()),
            "NULL" => Some(String::new()),
            _ => None,
        }
    };
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        let [platform, input, expected] = parts[..] else {
            panic!("line {}: malformed: {line}", n + 1)
        };
        if !platform.contains('A') && !platform.contains('U') {
            continue;
        }
        let (input, expected) = (input.trim(), expected.trim());
        let got = strata_frontend::expand_word(input, &env, '\\');
        checked += 1;
        match (got, expected) {
            (Err(_), "error") => {}
            (Ok(v), e) if v == e => {}
            (g, e) => failures.push(format!(
                "line {}: {input:?}: expected {e:?}, got {g:?}",
                n + 1
            )),
        }
    }
    assert!(checked > 200, "only {checked} vectors read");
    assert!(
        failures.is_empty(),
        "{} of {checked} envVarTest vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn words_test_vectors() {
    let dir = shell_dir();
    let text = std::fs::read_to_string(dir.join("wordsTest")).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if let Some(kv) = line.strip_prefix("ENV ") {
            let (k, v) = kv.split_once('=').unwrap();
            env.push((k.to_owned(), v.to_owned()));
            continue;
        }
        // Trailing spaces of the expectation are significant here.
        let (input, expected) = line.split_once('|').unwrap();
        let (input, expected) = (input.trim(), expected.trim_start());
        let lookup = |k: &str| {
            env.iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        let got = strata_frontend::split_words(input, &lookup, '\\');
        checked += 1;
        match (got, expected) {
            (Err(_), "error") => {}
            (Ok(w), e) if w.join(",") == e => {}
            (g, e) => failures.push(format!(
                "line {}: {input:?}: expected {e:?}, got {g:?}",
                n + 1
            )),
        }
    }
    assert!(checked > 15, "only {checked} vectors read");
    assert!(
        failures.is_empty(),
        "{} of {checked} wordsTest vectors fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn parser_dir() -> PathBuf {
    buildkit_dir().join("parser")
}

/// Every reference test file parses to exactly its recorded AST dump.
#[test]
fn parser_testfiles_match_their_ast_dumps() {
    let dir = parser_dir();
    let mut cases: Vec<_> = std::fs::read_dir(dir.join("testfiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let expected = std::fs::read_to_string(case.join("result")).unwrap();
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match strata_frontend::parse_ast(&src, "Dockerfile") {
            Ok((_, nodes)) => {
                let got = strata_frontend::dump(&nodes);
                if got != expected {
                    let diff: Vec<String> = got
                        .lines()
                        .zip(expected.lines())
                        .filter(|(g, e)| g != e)
                        .take(3)
                        .map(|(g, e)| format!("    got:      {g}\n    expected: {e}"))
                        .collect();
                    failures.push(format!(
                        "{name}: dump differs ({} vs {} lines)\n{}",
                        got.lines().count(),
                        expected.lines().count(),
                        diff.join("\n")
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: refused: {e}")),
        }
    }
    assert!(cases.len() >= 30, "only {} cases found", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} parser cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every reference negative case is refused, by the raw parser or the
/// instruction layer.
#[test]
fn parser_negative_cases_are_refused() {
    let dir = parser_dir();
    let mut n = 0;
    for case in std::fs::read_dir(dir.join("testfiles-negative")).unwrap() {
        let case = case.unwrap().path();
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let raw = strata_frontend::parse_ast(&src, "Dockerfile");
        assert!(raw.is_err(), "{} was accepted: {raw:?}", case.display());
        n += 1;
    }
    assert!(n >= 4, "only {n} negative cases found");
}

/// Start and end lines of instructions across continuations, comments and
/// blank lines inside them.
#[test]
fn parser_line_numbers() {
    let dir = parser_dir();
    let src = std::fs::read_to_string(dir.join("testfile-line/Dockerfile")).unwrap();
    let (_, nodes) = strata_frontend::parse_ast(&src, "Dockerfile").unwrap();
    let lines: Vec<(usize, usize)> = nodes.iter().map(|n| (n.start_line, n.end_line)).collect();
    // FROM on line 5; ENV continued onto 12; RUN from 17 through 31, across
    // blank lines and a comment-free gap inside the continuation.
    assert_eq!(lines, vec![(5, 5), (11, 12), (17, 31)]);
}
