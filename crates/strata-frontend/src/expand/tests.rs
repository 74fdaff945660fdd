use super::*;

fn env(k: &str) -> Option<String> {
    match k {
        "A" => Some("hello".into()),
        "P" => Some("/usr/local/bin".into()),
        "E" => Some(String::new()),
        _ => None,
    }
}

fn x(s: &str) -> String {
    expand_word(s, &env, '\\').unwrap()
}

/// `(word, expansion)` pairs with the variables of [`env`].
fn check(cases: &[(&str, &str)]) {
    for (word, want) in cases {
        assert_eq!(x(word), *want, "{word}");
    }
}

#[test]
fn plain_and_braced() {
    check(&[("$A-${A}x", "hello-hellox"), ("$NOPE.", "."), ("a$", "a$")]);
}

#[test]
fn defaults_and_alternatives() {
    check(&[
        ("${NOPE:-d}", "d"),
        ("${E:-d}", "d"),
        ("${E-d}", ""),
        ("${A:+yes}", "yes"),
        ("${E+set}", "set"),
        ("${NOPE+set}", ""),
    ]);
    assert!(
        expand_word("${NOPE:?must be set}", &env, '\\')
            .unwrap_err()
            .0
            .contains("must be set")
    );
}

#[test]
fn prefix_suffix_and_replace() {
    check(&[
        ("${P#*/}", "usr/local/bin"),
        ("${P##*/}", "bin"),
        ("${P%/*}", "/usr/local"),
        ("${P%%/l*}", "/usr"),
        ("${A/l/L}", "heLlo"),
        ("${A//l/L}", "heLLo"),
    ]);
}

#[test]
fn quotes_and_escapes() {
    check(&[
        ("'$A'", "$A"),
        ("\"$A world\"", "hello world"),
        ("\\$A", "$A"),
        ("\"a\\\"b\"", "a\"b"),
    ]);
    assert!(expand_word("'open", &env, '\\').is_err());
}

/// `ENV E=$A-${B}` with a space in B: the words are split before the
/// expansion, so E gets the whole value (it failed "expected KEY=VALUE").
#[test]
fn expand_words_splits_before_expanding() {
    let spaced = |k: &str| match k {
        "B" => Some("x y".to_owned()),
        other => env(other),
    };
    let w = expand_words("E=$A-${B} F=\"q r\" G=a\\ b 'H I'", &spaced, '\\').unwrap();
    assert_eq!(w, vec!["E=hello-x y", "F=q r", "G=a b", "H I"]);
    let w = expand_words("  ", &spaced, '\\').unwrap();
    assert!(w.is_empty());
    // ProcessWords (split after expansion) stays for EXPOSE.
    let w = split_words("E=$B", &spaced, '\\').unwrap();
    assert_eq!(w, vec!["E=x", "y"]);
    assert!(expand_words("E='open", &spaced, '\\').is_err());
}

#[test]
fn doubling_stops_at_the_word_cap() {
    // The issue's case: ARG A0=xxxxxxxxxx, then An=${An-1}${An-1}.
    let mut vars: Vec<(String, String)> = vec![("A0".into(), "x".repeat(10))];
    let mut failed_at = None;
    for n in 1..40 {
        let lookup = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let prev = format!("A{}", n - 1);
        match expand_word(&format!("${{{prev}}}${{{prev}}}"), &lookup, '\\') {
            Ok(v) => vars.push((format!("A{n}"), v)),
            Err(e) => {
                assert!(e.0.contains("longer than 1048576 bytes"), "{e}");
                failed_at = Some(n);
                break;
            }
        }
    }
    // 10 * 2^17 > 1 MiB >= 10 * 2^16.
    assert_eq!(failed_at, Some(17));
    let big = |k: &str| (k == "B").then(|| "ab".repeat(1000));
    // An empty pattern matches between every character.
    let e = expand_word("${B///0123456789}", &big, '`').map(|v| v.len());
    assert_eq!(e, Ok(2000 + 2001 * 10));
    // 1000 matches of 1100 bytes each.
    let e = expand_word(&format!("${{B//a/{}}}", "y".repeat(1100)), &big, '`');
    assert!(e.is_err_and(|e| e.0.contains("longer than")));
    let e = split_words(&format!("a ${{B}}{}", "${B}".repeat(600)), &big, '\\');
    assert!(e.is_err_and(|e| e.0.contains("longer than")));
}

#[test]
fn splitting_keeps_quoted_spaces() {
    let w = split_words("A=\"x y\" B=$A 'C D'", &env, '\\').unwrap();
    assert_eq!(w, vec!["A=x y", "B=hello", "C D"]);
}
