//! `.dockerignore` matching, from the reference's documentation
//! (docs.docker.com/build/concepts/context/#dockerignore-files) and
//! moby/patternmatcher's rules: Go filepath.Match syntax plus `**`, paths
//! cleaned, leading `/` dropped, `!` exceptions, last match wins, a rule
//! matching a parent directory covering what is in it.

use strata_frontend::Ignore;

fn rules(text: &str) -> Ignore {
    Ignore::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

/// `name: rules => [excluded paths], [kept paths]`.
macro_rules! ignore_cases {
    ($($name:ident: $text:expr => [$($ex:expr),*], [$($keep:expr),*];)*) => {$(
        #[test]
        fn $name() {
            let ig = rules($text);
            $(assert!(ig.excluded($ex), "{:?} should exclude {:?}", $text, $ex);)*
            $(assert!(!ig.excluded($keep), "{:?} should keep {:?}", $text, $keep);)*
        }
    )*};
}

ignore_cases! {
    // The documentation's example file.
    doc_comment_line_is_ignored: "# comment\n" => [], ["# comment", "comment"];
    doc_star_in_subdir: "*/temp*" => ["somedir/temporary.txt", "somedir/temp"], ["temp", "a/b/temp.txt"];
    doc_two_levels: "*/*/temp*" => ["somedir/subdir/temporary.txt"], ["somedir/temporary.txt"];
    doc_question_mark: "temp?" => ["tempa", "tempb"], ["temp", "tempab"];
    doc_double_star_any_depth: "**/*.go" => ["a.go", "x/y/z.go"], ["a.gox"];
    doc_exception_reincludes: "*.md\n!README.md" => ["CHANGES.md"], ["README.md"];
    doc_last_rule_wins: "*.md\n!README*.md\nREADME-secret.md" => ["README-secret.md", "a.md"], ["README-public.md"];
    doc_exception_then_rule: "*.md\nREADME-secret.md\n!README*.md" => ["a.md"], ["README-secret.md", "README-x.md"];
    star_does_not_cross_slash: "*.log" => ["a.log"], ["dir/a.log"];
    question_does_not_match_slash: "a?b" => ["axb"], ["a/b"];
    directory_rule_covers_contents: "build" => ["build", "build/out/a.o"], ["builder", "src/build"];
    trailing_slash_cleaned: "build/" => ["build/x"], ["buildx"];
    leading_slash_stripped: "/secret" => ["secret", "secret/k"], ["a/secret"];
    leading_dot_slash_stripped: "./tmp" => ["tmp/x"], ["a/tmp"];
    dotdot_cleaned: "a/../b" => ["b"], ["a"];
    double_slash_cleaned: "a//b" => ["a/b"], ["a"];
    double_star_middle: "a/**/z" => ["a/z", "a/b/z", "a/b/c/z"], ["a/zz", "b/z"];
    double_star_trailing_everything_below: "a/**" => ["a/x", "a/x/y"], ["b/x"];
    double_star_alone_everything: "**" => ["x", "x/y"], [];
    char_class: "[ab].txt" => ["a.txt", "b.txt"], ["c.txt"];
    char_range: "file[0-9]" => ["file3"], ["filex"];
    negated_class: "[^a]x" => ["bx"], ["ax"];
    escaped_star_is_literal: "a\\*" => ["a*"], ["ab"];
    exception_reincludes_whole_directory: "*\n!src" => ["Dockerfile", "target/x"], ["src", "src/main.rs", "src/a/b.rs"];
    exception_inside_excluded_dir: "docs\n!docs/README.md" => ["docs/a.md"], ["docs/README.md"];
    whitespace_trimmed: "  *.tmp  " => ["a.tmp"], ["a.tmpx"];
    empty_lines_skipped: "\n\n*.o\n\n" => ["x.o"], ["x.c"];
    exception_without_match_changes_nothing: "!keep" => [], ["keep", "other"];
    dot_pattern_is_harmless: "." => [], ["a"];
    crlf_lines: "*.log\r\n!x.log\r\n" => ["a.log"], ["x.log"];
}

#[test]
fn lone_exclamation_mark_is_an_error() {
    assert!(Ignore::parse("!\n").is_err());
}

#[test]
fn unclosed_class_is_an_error() {
    assert!(Ignore::parse("[abc\n").is_err());
}

#[test]
fn no_rules_excludes_nothing() {
    let ig = rules("# only a comment\n");
    assert!(ig.is_empty());
    assert!(!ig.excluded("anything"));
}

#[test]
fn many_stars_do_not_backtrack_exponentially() {
    // 25 stars against 200 characters: a backtracking matcher takes ages.
    let pattern = format!("{}b", "*a".repeat(25));
    let ig = rules(&pattern);
    let path = "a".repeat(200);
    let start = std::time::Instant::now();
    assert!(!ig.excluded(&path));
    assert!(ig.excluded(&format!("{path}b")));
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn parent_of_a_deep_path_matches() {
    let ig = rules("a/*/c");
    assert!(ig.excluded("a/b/c/d/e/f"));
    assert!(!ig.excluded("a/b/d/c"));
}

#[test]
fn excluded_directory_is_walked_for_an_exception_inside() {
    let ig = rules("docs\n!docs/README.md\n");
    assert!(ig.excluded("docs"));
    assert!(ig.descend_excluded("docs"));
    assert!(!ig.excluded("docs/README.md"));
    assert!(ig.excluded("docs/other.md"));
}

#[test]
fn excluded_directory_is_not_walked_without_such_an_exception() {
    let ig = rules("docs\n!other/README.md\n");
    assert!(!ig.descend_excluded("docs"));
    assert!(!rules("docs\n").descend_excluded("docs"));
    // A trailing `/*` or `/**` is no pattern character to the walker.
    let ig = rules("docs\n!other/**\n");
    assert!(!ig.descend_excluded("docs"));
    assert!(ig.descend_excluded("other"));
}

/// Current fsutil (BuildKit 0.25) walks every excluded directory once an
/// exception holds a pattern character, so `*`, `subdir`, `!*/sub1*` keeps
/// `subdir/sub1.txt` (and `subdir` for it); BuildKit 0.8 did not.
#[test]
fn wildcard_exception_walks_every_excluded_directory() {
    let ig = rules("*\nsubdir\n!*/sub1*\n");
    assert!(ig.excluded("subdir"));
    assert!(ig.descend_excluded("subdir"));
    assert!(!ig.excluded("subdir/sub1.txt"));
    assert!(ig.excluded("subdir/sub2.txt"));
    let ig = rules("docs\n!**/README.md\n");
    assert!(ig.descend_excluded("docs"));
    assert!(ig.descend_excluded("doc"));
    assert!(!ig.excluded("docs/README.md"));
}
