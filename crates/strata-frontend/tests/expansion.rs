//! Word expansion as the Dockerfile reference documents it ("Environment
//! replacement"): `$var`, `${var}`, the `${var:-word}` family, the bash
//! pattern modifiers BuildKit supports, quotes and escapes, and word
//! splitting for ENV/LABEL/ARG lists.

use strata_frontend::{expand_word, split_words};

fn env(k: &str) -> Option<String> {
    match k {
        "A" => Some("hello".into()),
        "B" => Some("two words".into()),
        "E" => Some(String::new()),
        "P" => Some("/usr/local/bin".into()),
        "F" => Some("archive.tar.gz".into()),
        "U" => Some("héllo wörld".into()),
        _ => None,
    }
}

fn x(s: &str) -> Result<String, String> {
    expand_word(s, &env, '\\').map_err(|e| e.0)
}

macro_rules! expands {
    ($($name:ident: $input:expr => $want:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(x($input).as_deref(), Ok($want), "{}", $input);
        }
    )*};
}

macro_rules! fails {
    ($($name:ident: $input:expr => $frag:expr;)*) => {$(
        #[test]
        fn $name() {
            match x($input) {
                Err(e) => assert!(e.contains($frag), "{:?} not in {:?}", $frag, e),
                Ok(v) => panic!("{} expanded to {v:?}", $input),
            }
        }
    )*};
}

macro_rules! splits {
    ($($name:ident: $input:expr => [$($w:expr),*];)*) => {$(
        #[test]
        fn $name() {
            let want: Vec<String> = vec![$($w.to_string()),*];
            assert_eq!(split_words($input, &env, '\\').map_err(|e| e.0), Ok(want), "{}", $input);
        }
    )*};
}

expands! {
    plain_variable: "$A" => "hello";
    braced_variable: "${A}" => "hello";
    braced_joins_text: "${A}world" => "helloworld";
    unbraced_name_ends_at_non_name_char: "$A-x" => "hello-x";
    unbraced_name_is_greedy: "$Aworld" => "";
    unset_is_empty: "[$NOPE]" => "[]";
    lone_dollar_is_literal: "a$" => "a$";
    dollar_before_non_name_is_literal: "$%" => "$%";
    // ${variable:-word}: word if unset or empty.
    colon_dash_unset: "${NOPE:-dflt}" => "dflt";
    colon_dash_empty: "${E:-dflt}" => "dflt";
    colon_dash_set: "${A:-dflt}" => "hello";
    // ${variable-word}: word only if unset.
    dash_unset: "${NOPE-dflt}" => "dflt";
    dash_empty_stays_empty: "${E-dflt}" => "";
    // ${variable:+word}: word if set and non-empty, else empty.
    colon_plus_set: "${A:+yes}" => "yes";
    colon_plus_empty: "${E:+yes}" => "";
    colon_plus_unset: "${NOPE:+yes}" => "";
    // ${variable+word}: word if set, even empty.
    plus_empty_is_set: "${E+yes}" => "yes";
    plus_unset: "${NOPE+yes}" => "";
    default_word_is_expanded: "${NOPE:-$A}" => "hello";
    question_set_passes: "${A:?must}" => "hello";
    question_plain_empty_is_set: "${E?must}" => "";
    // ${variable#pattern} and friends (bash semantics, * and ? wildcards).
    hash_shortest_prefix: "${P#*/}" => "usr/local/bin";
    double_hash_longest_prefix: "${P##*/}" => "bin";
    percent_shortest_suffix: "${F%.*}" => "archive.tar";
    double_percent_longest_suffix: "${F%%.*}" => "archive";
    prefix_no_match_keeps_value: "${A#x*}" => "hello";
    prefix_question_wildcard: "${A#?}" => "ello";
    replace_first: "${A/l/L}" => "heLlo";
    replace_all: "${A//l/L}" => "heLLo";
    replace_with_nothing: "${A//l}" => "heo";
    // Quotes: single quotes keep $ literal, double quotes expand.
    single_quotes_literal: "'$A'" => "$A";
    double_quotes_expand: "\"$A\"" => "hello";
    double_quotes_keep_spaces: "\"$B\"" => "two words";
    escaped_dollar: "\\$A" => "$A";
    escaped_brace_form: "\\${A}" => "${A}";
    escape_in_double_quotes: "\"a\\\"b\"" => "a\"b";
    backslash_before_ordinary_char_in_double_quotes_kept: "\"a\\zb\"" => "a\\zb";
    escaped_space: "a\\ b" => "a b";
    mixed_quotes_concatenate: "'a'\"b\"c" => "abc";
    unicode_values_survive: "${U}" => "héllo wörld";
    unicode_prefix_trim: "${U#h?}" => "llo wörld";
    positional_parameters_are_empty: "a$1b" => "ab";
    special_parameters_are_empty: "a$@b" => "ab";
}

#[test]
fn backtick_escape_character() {
    assert_eq!(
        expand_word("`$A", &env, '`').map_err(|e| e.0),
        Ok("$A".into())
    );
    assert_eq!(
        expand_word("a\\b", &env, '`').map_err(|e| e.0),
        Ok("a\\b".into())
    );
}

fails! {
    colon_question_unset_fails: "${NOPE:?is required}" => "is required";
    colon_question_empty_fails: "${E:?is required}" => "is required";
    question_unset_default_message: "${NOPE?}" => "NOPE";
    unterminated_single_quote: "'abc" => "single-quote";
    unterminated_double_quote: "\"abc" => "double-quote";
    missing_closing_brace: "${A" => "missing '}'";
    empty_braces: "${}" => "bad substitution";
    unsupported_modifier: "${A!x}" => "unsupported modifier";
}

splits! {
    split_on_spaces: "a b  c" => ["a", "b", "c"];
    quoted_spaces_stay: "A=\"x y\" B='z w'" => ["A=x y", "B=z w"];
    unquoted_variable_is_split: "A=$B" => ["A=two", "words"];
    quoted_variable_is_not_split: "A=\"$B\"" => ["A=two words"];
    escaped_space_does_not_split: "a\\ b c" => ["a b", "c"];
    empty_input_no_words: "   " => [];
    empty_quotes_are_a_word: "A= B=\"\"" => ["A=", "B="];
}

#[test]
fn many_stars_in_a_trim_pattern_stay_fast() {
    let long = |k: &str| (k == "L").then(|| "a".repeat(300));
    let pat = format!("${{L#{}b}}", "*a".repeat(30));
    let start = std::time::Instant::now();
    assert_eq!(
        expand_word(&pat, &long, '\\').map_err(|e| e.0),
        Ok("a".repeat(300))
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep = format!("{}x{}", "${N:-".repeat(5000), "}".repeat(5000));
    assert!(x(&deep).is_err());
    let fine = format!("{}x{}", "${N:-".repeat(20), "}".repeat(20));
    assert_eq!(x(&fine).as_deref(), Ok("x"));
}
