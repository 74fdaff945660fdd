use super::*;

fn one(src: &str) -> Instruction {
    parse(src, "Dockerfile").unwrap().instructions.remove(0)
}

#[test]
fn continuation_skips_comments_and_blank_lines() {
    let i = one("RUN echo a \\\n# comment\n\n  && echo b\n");
    assert_eq!(i.args, Args::Shell("echo a   && echo b".into()));
    assert_eq!((i.line, i.end_line), (1, 4));
}

#[test]
fn json_and_shell_forms() {
    assert_eq!(
        one("CMD [\"a\", \"b\"]").args,
        Args::Exec(vec!["a".into(), "b".into()])
    );
    assert_eq!(one("CMD [a, b]").args, Args::Shell("[a, b]".into()));
    assert_eq!(one("cmd echo hi").keyword, "cmd");
}

#[test]
fn flags_are_parsed_and_checked() {
    let i = one("COPY --from=build --chown=1:2 a /b");
    assert_eq!(i.flag("from"), Some("build"));
    assert_eq!(i.flag("chown"), Some("1:2"));
    assert_eq!(i.args.words(), vec!["a", "/b"]);
    let e = parse("COPY --nope a b", "Dockerfile").unwrap_err();
    assert!(e.message.contains("unknown flag: --nope"), "{e}");
}

/// BuildKit's parseMount refuses what it would otherwise ignore.
#[test]
fn mount_fields_are_checked() {
    let bad = |src: &str| parse(src, "Dockerfile").unwrap_err().message;
    let m = bad("FROM a\nRUN --mount=type=bind,target=/x,z true\n");
    assert!(
        m.contains("invalid field 'z' must be a key=value pair"),
        "{m}"
    );
    let m = bad("FROM a\nRUN --mount=type=cache,target=/x,colour=red true\n");
    assert!(m.contains("unexpected key 'colour' in 'colour=red'"), "{m}");
    let m = bad("FROM a\nRUN --mount=type=volume,target=/x true\n");
    assert!(m.contains("unsupported mount type \"volume\""), "{m}");
    let m = bad("FROM a\nRUN --mount=target=/x,required true\n");
    assert!(
        m.contains("unexpected key 'required' for mount type 'bind'"),
        "{m}"
    );
    for ok in [
        "RUN --mount=type=bind,target=/x,ro true",
        "RUN --mount=type=secret,id=s,required true",
        "RUN --mount=type=cache,target=/c,sharing=locked,mode=0700,uid=1,gid=2,RW true",
        "RUN --mount=type=$T,target=/x true",
    ] {
        let src = format!("FROM a\n{ok}\n");
        assert!(parse(&src, "Dockerfile").is_ok(), "{ok}");
    }
}

#[test]
fn escape_directive_and_bom_and_crlf() {
    let df = parse("\u{feff}# escape=`\r\nRUN a `\r\n b\r\n", "Dockerfile").unwrap();
    assert_eq!(df.escape, '`');
    assert_eq!(df.instructions[0].args, Args::Shell("a  b".into()));
}

#[test]
fn heredocs_are_collected() {
    let df = parse(
        "RUN <<EOF\necho 1\necho 2\nEOF\nRUN <<-'X' sh\n\techo $A\n\tX\n",
        "D",
    )
    .unwrap();
    assert_eq!(df.instructions[0].heredocs[0].content, "echo 1\necho 2\n");
    let h = &df.instructions[1].heredocs[0];
    assert_eq!((h.content.as_str(), h.quoted), ("echo $A\n", true));
}

#[test]
fn unknown_instruction_suggests_and_points() {
    let e = parse("FROM x\n  RUNN echo\n", "Dockerfile").unwrap_err();
    assert_eq!((e.line, e.column), (2, 3));
    assert!(e.message.contains("did you mean RUN?"), "{}", e.message);
    assert!(e.render().contains("2 |   RUNN echo"), "{}", e.render());
}

#[test]
fn empty_and_comment_only_files_are_refused() {
    assert!(parse("", "D").is_err());
    assert!(parse("# just a comment\n\n", "D").is_err());
    assert!(parse("FROM x\nENV A\n", "D").is_err());
}

#[test]
fn continuation_at_eof_ends_the_instruction() {
    let i = one("RUN echo \\");
    assert_eq!(i.args, Args::Shell("echo".into()));
}

/// Progress names a step as BuildKit does, by its source with its flags
/// (issue #13: `COPY --from=build /src/hello …` showed as `COPY /src/hello …`).
#[test]
fn source_form_keeps_flags_as_written() {
    let df = parse(
        "FROM x AS b\nCOPY --from=build --chmod=644 /src/hello /hello\nRUN --mount=type=cache,target=/c --network=none make\nHEALTHCHECK --interval=5s --retries=3 CMD true\nCOPY --link a b\n",
        "Dockerfile",
    )
    .unwrap();
    let forms: Vec<String> = df.instructions.iter().map(|i| i.source_form()).collect();
    assert_eq!(
        forms[1..],
        [
            "COPY --from=build --chmod=644 /src/hello /hello",
            "RUN --mount=type=cache,target=/c --network=none make",
            "HEALTHCHECK --interval=5s --retries=3 CMD true",
            "COPY --link a b",
        ]
    );
}

/// BuildKit's `BFlags` booleans: bare or `true` (any case) on, `false` off,
/// absent off, the last one winning; an empty or other value refused.
#[test]
fn bool_flags_read_as_buildkit_reads_them() {
    assert_eq!(one("COPY a b").bool_flag("link"), Ok(false));
    assert_eq!(one("COPY --link a b").bool_flag("link"), Ok(true));
    assert_eq!(one("COPY --link=TRUE a b").bool_flag("link"), Ok(true));
    assert_eq!(one("COPY --link=false a b").bool_flag("link"), Ok(false));
    assert_eq!(
        one("COPY --link=false --link a b").bool_flag("link"),
        Ok(true)
    );
    assert_eq!(
        one("COPY --parents= a b").bool_flag("parents"),
        Err("missing a value on flag: parents".to_owned())
    );
    assert_eq!(
        one("COPY --link=yes a b").bool_flag("link"),
        Err("expecting boolean value for flag link, not: yes".to_owned())
    );
}
