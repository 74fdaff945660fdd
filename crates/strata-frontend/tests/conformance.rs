//! BuildKit's own word-expansion vectors (../shared/conformance, see its
//! README): every `envVarTest` line for all/Unix platforms and every
//! `wordsTest` line must hold. Skips loudly where ../shared is absent.

use std::path::PathBuf;

fn shell_dir(test: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/buildkit/frontend/dockerfile/shell");
    if dir.is_dir() {
        Some(dir)
    } else {
        strata_testutil::skip(
            test,
            &format!(
                "{} is absent (../shared is not beside the checkout)",
                dir.display()
            ),
        );
        None
    }
}

#[test]
fn env_var_test_vectors() {
    let Some(dir) = shell_dir("env_var_test_vectors") else {
        return;
    };
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
    let Some(dir) = shell_dir("words_test_vectors") else {
        return;
    };
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
