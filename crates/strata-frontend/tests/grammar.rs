//! The line grammar and instruction layer, case by case, from the Dockerfile
//! reference (docs.docker.com/reference/dockerfile): directives, comments,
//! continuations, JSON versus shell form, heredocs, flags and the errors.

use strata_frontend::{Args, Diagnostic, Dockerfile, Instruction, parse};

fn ok(src: &str) -> Dockerfile {
    match parse(src, "Dockerfile") {
        Ok(df) => df,
        Err(d) => panic!("{src:?} was refused: {}", d.render()),
    }
}

fn err(src: &str) -> Diagnostic {
    match parse(src, "Dockerfile") {
        Ok(df) => panic!("{src:?} parsed: {:?}", df.instructions),
        Err(d) => d,
    }
}

/// The instruction at `i` (0-based) of a parsed Dockerfile.
fn ins(src: &str, i: usize) -> Instruction {
    ok(src).instructions.swap_remove(i)
}

fn shell(s: &str) -> Args {
    Args::Shell(s.into())
}

fn exec(v: &[&str]) -> Args {
    Args::Exec(v.iter().map(|s| s.to_string()).collect())
}

/// `name: source => instruction index, expected args` as one #[test] each.
macro_rules! args_cases {
    ($($name:ident: $src:expr => $i:expr, $want:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(ins($src, $i).args, $want);
        }
    )*};
}

/// `name: source => message fragment`: the source is refused with it.
macro_rules! refused {
    ($($name:ident: $src:expr => $frag:expr;)*) => {$(
        #[test]
        fn $name() {
            let d = err($src);
            assert!(d.message.contains($frag), "{:?} not in {:?}", $frag, d.message);
        }
    )*};
}

/// `name: source => escape character`.
macro_rules! escape_cases {
    ($($name:ident: $src:expr => $esc:expr;)*) => {$(
        #[test]
        fn $name() {
            assert_eq!(ok($src).escape, $esc);
        }
    )*};
}

// Instructions are case-insensitive; convention is upper case.
args_cases! {
    keyword_lowercase: "from x\nrun echo hi\n" => 1, shell("echo hi");
    keyword_mixed_case: "FROM x\nRuN echo hi\n" => 1, shell("echo hi");
    leading_whitespace_before_instruction: "FROM x\n    RUN echo hi\n" => 1, shell("echo hi");
    // "BuildKit treats lines that begin with # as a comment, unless ... a
    // valid parser directive"; a # elsewhere is an argument.
    hash_inside_line_is_text: "FROM x\nRUN echo hi # not a comment\n" => 1, shell("echo hi # not a comment");
    indented_comment_is_comment: "FROM x\n   # comment\nRUN a\n" => 1, shell("a");
    // Continuation lines: comments and empty lines inside are removed.
    continuation_joins_lines: "FROM x\nRUN a \\\n b\n" => 1, shell("a  b");
    continuation_skips_comment_line: "FROM x\nRUN a \\\n# c\n b\n" => 1, shell("a  b");
    continuation_skips_empty_line: "FROM x\nRUN a \\\n\n b\n" => 1, shell("a  b");
    continuation_allows_trailing_blanks: "FROM x\nRUN a \\  \t\n b\n" => 1, shell("a  b");
    continuation_at_eof: "FROM x\nRUN a \\" => 1, shell("a");
    backtick_continuation: "# escape=`\nFROM x\nRUN a `\n b\n" => 1, shell("a  b");
    backslash_is_literal_with_backtick_escape: "# escape=`\nFROM x\nRUN dir c:\\\n" => 1, shell("dir c:\\");
    crlf_line_endings: "FROM x\r\nRUN a \\\r\n b\r\n" => 1, shell("a  b");
    utf8_bom_is_skipped: "\u{feff}FROM x\nRUN a\n" => 1, shell("a");
    // Exec form is a JSON array of strings, double quotes only.
    json_exec_form: "FROM x\nCMD [\"a\", \"b c\"]\n" => 1, exec(&["a", "b c"]);
    json_escapes_decoded: "FROM x\nRUN [\"echo\", \"a\\\\b\", \"\\u0041\"]\n" => 1, exec(&["echo", "a\\b", "A"]);
    json_empty_array: "FROM x\nCMD []\n" => 1, exec(&[]);
    single_quotes_fall_back_to_shell: "FROM x\nCMD ['a', 'b']\n" => 1, shell("['a', 'b']");
    non_string_items_fall_back_to_shell: "FROM x\nCMD [1, 2]\n" => 1, shell("[1, 2]");
    unterminated_json_falls_back_to_shell: "FROM x\nENTRYPOINT [\"a\"\n" => 1, shell("[\"a\"");
    entrypoint_shell_form: "FROM x\nENTRYPOINT exec top -b\n" => 1, shell("exec top -b");
    shell_instruction_json: "FROM x\nSHELL [\"powershell\", \"-command\"]\n" => 1, exec(&["powershell", "-command"]);
    volume_json: "FROM x\nVOLUME [\"/data\", \"/logs\"]\n" => 1, exec(&["/data", "/logs"]);
    volume_words: "FROM x\nVOLUME /data /logs\n" => 1, shell("/data /logs");
    copy_json_form_with_spaces: "FROM x\nCOPY [\"a b\", \"/dst/\"]\n" => 1, exec(&["a b", "/dst/"]);
    // JSON form is not recognised where the instruction has none.
    env_value_brackets_are_text: "FROM x\nENV A=[\"b\"]\n" => 1, shell("A=[\"b\"]");
    maintainer_text: "FROM x\nMAINTAINER Jane <j@example.com>\n" => 1, shell("Jane <j@example.com>");
    onbuild_keeps_trigger_text: "FROM x\nONBUILD RUN make\n" => 1, shell("RUN make");
    healthcheck_none: "FROM x\nHEALTHCHECK NONE\n" => 1, shell("NONE");
    stopsignal_text: "FROM x\nSTOPSIGNAL SIGKILL\n" => 1, shell("SIGKILL");
    arg_several_per_line: "ARG a=1 b\nFROM x\n" => 0, shell("a=1 b");
}

// Parser directives: `# directive=value` at the very top only.
escape_cases! {
    escape_directive_backtick: "# escape=`\nFROM x\n" => '`';
    escape_directive_backslash: "# escape=\\\nFROM x\n" => '\\';
    directive_key_case_insensitive: "# ESCAPE=`\nFROM x\n" => '`';
    directive_whitespace_allowed: "#escape = `\nFROM x\n" => '`';
    directive_tab_whitespace: "#\tescape=\t`\nFROM x\n" => '`';
    directive_after_instruction_is_comment: "FROM x\n# escape=`\n" => '\\';
    directive_after_comment_is_comment: "# hello\n# escape=`\nFROM x\n" => '\\';
    directive_after_unknown_directive_is_comment: "# unknown=v\n# escape=`\nFROM x\n" => '\\';
    directive_after_blank_line_is_comment: "\n# escape=`\nFROM x\n" => '\\';
    syntax_then_escape: "# syntax=docker/dockerfile:1\n# escape=`\nFROM x\n" => '`';
}

#[test]
fn directives_are_recorded_lowercased() {
    let df = ok("# Syntax=docker/dockerfile:1\n# check=skip=all\nFROM x\n");
    assert_eq!(
        df.directives,
        vec![
            ("syntax".to_owned(), "docker/dockerfile:1".to_owned()),
            ("check".to_owned(), "skip=all".to_owned())
        ]
    );
}

refused! {
    directive_twice: "# escape=`\n# escape=\\\nFROM x\n" => "only one escape parser directive";
    bad_escape_token: "# escape=x\nFROM x\n" => "invalid escape token";
    empty_file: "" => "no instructions";
    only_comments: "# a\n# b\n" => "no instructions";
    env_without_value: "FROM x\nENV A\n" => "must have two arguments";
    label_without_value: "FROM x\nLABEL a\n" => "must have two arguments";
    run_without_arguments: "FROM x\nRUN\n" => "RUN requires at least one argument";
    from_without_arguments: "FROM\n" => "FROM requires at least one argument";
    unknown_instruction: "FROM x\nFOOBARBAZ y\n" => "unknown instruction: FOOBARBAZ";
    typo_suggests_nearest: "FROM x\nCOPPY a b\n" => "did you mean COPY?";
    typo_suggests_workdir: "FROM x\nWORKDR /a\n" => "did you mean WORKDIR?";
    unknown_flag_on_run: "FROM x\nRUN --nope=1 a\n" => "unknown flag: --nope for RUN";
    from_flag_not_allowed_on_add: "FROM x\nADD --from=b a c\n" => "unknown flag: --from for ADD";
    checksum_not_allowed_on_copy: "FROM x\nCOPY --checksum=sha256:00 a b\n" => "unknown flag: --checksum for COPY";
    flags_not_allowed_on_cmd: "FROM x\nCMD --x a\n" => "unknown flag: --x for CMD";
    unknown_flag_suggests_nearest: "FROM x\nCOPY --chwon=1 a b\n" => "unknown flag: --chwon for COPY (did you mean chown?)";
    unterminated_heredoc: "FROM x\nRUN <<EOF\necho\n" => "unterminated heredoc <<EOF";
    // "ONBUILD ONBUILD isn't allowed"; FROM and MAINTAINER neither.
    onbuild_onbuild: "FROM x\nONBUILD ONBUILD RUN a\n" => "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";
    onbuild_from: "FROM x\nONBUILD FROM y\n" => "FROM isn't allowed as an ONBUILD trigger";
    onbuild_maintainer_any_case: "FROM x\nonbuild maintainer me\n" => "MAINTAINER isn't allowed as an ONBUILD trigger";
    onbuild_unknown_trigger: "FROM x\nONBUILD RUNN a\n" => "did you mean RUN?";
    onbuild_without_trigger: "FROM x\nONBUILD\n" => "ONBUILD requires at least one argument";
}

#[test]
fn error_points_at_file_line_and_column() {
    let d = err("FROM x\n\n   BADCMD y\n");
    assert_eq!((d.file.as_str(), d.line, d.column), ("Dockerfile", 3, 4));
    let r = d.render();
    assert!(
        r.starts_with("Dockerfile:3:4: unknown instruction: BADCMD"),
        "{r}"
    );
    assert!(r.contains("3 |    BADCMD y\n  |    ^"), "{r}");
}

#[test]
fn onbuild_error_points_at_the_trigger() {
    let d = err("FROM x\nONBUILD  FROM y\n");
    assert_eq!((d.line, d.column), (2, 10));
}

#[test]
fn flags_with_values_and_booleans() {
    let i = ins("FROM x\nCOPY --chown=1:2 --chmod=755 --link a b\n", 1);
    assert_eq!(i.flag("chown"), Some("1:2"));
    assert_eq!(i.flag("chmod"), Some("755"));
    assert_eq!(i.flag("link"), Some(""));
    assert_eq!(i.flag("from"), None);
    assert_eq!(i.args, shell("a b"));
}

#[test]
fn repeated_flags_keep_every_value() {
    let i = ins(
        "FROM x\nRUN --mount=type=cache,target=/a --mount=type=tmpfs,target=/b make\n",
        1,
    );
    assert_eq!(
        i.flag_all("mount"),
        vec!["type=cache,target=/a", "type=tmpfs,target=/b"]
    );
    assert_eq!(i.args, shell("make"));
}

#[test]
fn copy_and_add_flags_of_the_reference() {
    ok("FROM x\nCOPY --parents --exclude=*.md --exclude=*.txt ./a/./b /c/\n");
    ok(
        "FROM x\nADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/a /a\n",
    );
    ok("FROM x\nADD --keep-git-dir=true https://github.com/moby/buildkit.git#v0.10.1 /b\n");
    ok("FROM x\nRUN --network=none --security=insecure make\n");
    ok("FROM --platform=linux/amd64 x\n");
}

#[test]
fn healthcheck_options() {
    let i = ins(
        "FROM x\nHEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=1s --retries=3 CMD curl -f http://localhost/\n",
        1,
    );
    assert_eq!(i.flag("retries"), Some("3"));
    assert_eq!(i.args, shell("CMD curl -f http://localhost/"));
}

#[test]
fn heredoc_as_run_script() {
    let i = ins(
        "FROM x\nRUN <<EOF\napt-get update\napt-get install -y vim\nEOF\n",
        1,
    );
    assert_eq!(i.heredocs.len(), 1);
    assert_eq!(i.heredocs[0].name, "EOF");
    assert_eq!(
        i.heredocs[0].content,
        "apt-get update\napt-get install -y vim\n"
    );
    assert!(!i.heredocs[0].quoted);
}

#[test]
fn heredoc_dash_strips_leading_tabs() {
    let i = ins("FROM x\nRUN <<-EOT\n\t\techo hi\n\tEOT\n", 1);
    assert_eq!(i.heredocs[0].content, "echo hi\n");
}

#[test]
fn heredoc_quoted_delimiters_disable_expansion() {
    for src in [
        "FROM x\nRUN <<\"EOF\"\n$A\nEOF\n",
        "FROM x\nRUN <<'EOF'\n$A\nEOF\n",
    ] {
        let i = ins(src, 1);
        assert!(i.heredocs[0].quoted, "{src}");
        assert_eq!(i.heredocs[0].content, "$A\n");
    }
}

#[test]
fn heredoc_with_interpreter() {
    let i = ins("FROM x\nRUN <<EOF python3\nprint('hi')\nEOF\n", 1);
    assert_eq!(i.args, shell("<<EOF python3"));
    assert_eq!(i.heredocs[0].content, "print('hi')\n");
}

#[test]
fn several_heredocs_on_copy() {
    let df = ok("FROM x\nCOPY <<a.txt <<b.txt /dst/\nA\na.txt\nB\nb.txt\nRUN true\n");
    let c = &df.instructions[1];
    let names: Vec<&str> = c.heredocs.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, vec!["a.txt", "b.txt"]);
    assert_eq!(df.instructions[2].keyword, "run");
}

#[test]
fn heredoc_body_is_not_parsed_as_instructions() {
    let df = ok("FROM x\nRUN <<EOF\nFROM nothing\nBADCMD\nEOF\nCMD a\n");
    assert_eq!(df.instructions.len(), 3);
    assert_eq!(
        df.instructions[1].heredocs[0].content,
        "FROM nothing\nBADCMD\n"
    );
}

#[test]
fn line_numbers_of_continued_instructions() {
    let df = ok("FROM x\n\nRUN a \\\n  b \\\n\n  c\nCMD d\n");
    let r = &df.instructions[1];
    assert_eq!((r.line, r.end_line), (3, 6));
    assert_eq!(df.instructions[2].line, 7);
}

#[test]
fn escaped_escape_at_end_of_line_is_not_a_continuation() {
    let df = ok("FROM x\nRUN echo a\\\\\nRUN b\n");
    assert_eq!(df.instructions.len(), 3);
}

#[test]
fn legacy_env_form_keeps_the_rest_as_value() {
    let i = ins("FROM x\nENV GREETING hello big world\n", 1);
    assert_eq!(i.args, shell("GREETING hello big world"));
}

#[test]
fn arg_pairs_split_name_and_default() {
    let i = ins("ARG A=1 B C=x=y\nFROM z\n", 0);
    assert_eq!(
        i.arg_pairs(),
        vec![
            ("A".to_owned(), Some("1".to_owned())),
            ("B".to_owned(), None),
            ("C".to_owned(), Some("x=y".to_owned())),
        ]
    );
}

/// BuildKit suggests only a flag within edit distance 2 (`util/suggest`).
#[test]
fn unknown_flag_far_from_any_has_no_suggestion() {
    let d = err("FROM x\nCOPY --owner=1 a b\n");
    assert_eq!(d.message, "unknown flag: --owner for COPY");
}
