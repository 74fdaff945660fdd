//! Inputs that once could, or plausibly could, crash or stall the frontend:
//! each must come back as a result or a located error. (Crashes the fuzz
//! target finds are added here.)

use std::collections::BTreeMap;

use strata_frontend::{BuildInputs, graph, parse, parse_ast, stages};

/// Runs the whole frontend on `src`; returns whether it parsed.
fn survive(src: &str) -> bool {
    let ast = parse_ast(src, "Dockerfile").map(|(_, n)| strata_frontend::dump(&n));
    let Ok(df) = parse(src, "Dockerfile") else {
        return ast.is_ok();
    };
    if let Ok((_, st)) = stages(&df, &BuildInputs::host(BTreeMap::new())) {
        let _ = graph(&df, &st, None);
    }
    true
}

#[test]
fn deeply_chained_onbuild() {
    let src = format!("FROM x\n{}RUN a\n", "ONBUILD ".repeat(20_000));
    assert!(parse(&src, "D").is_err());
    survive(&src);
}

#[test]
fn very_long_continuation() {
    let src = format!("FROM x\nRUN a{}\n", " \\\n b".repeat(20_000));
    assert!(survive(&src));
}

#[test]
fn many_heredocs_on_one_line() {
    let src = format!("FROM x\nRUN {}\n", "<<A ".repeat(2_000));
    survive(&src);
}

#[test]
fn unbalanced_braces_in_from() {
    assert!(survive("FROM ${a:-${b:-${c\n"));
    let df = parse("ARG A\nFROM ${A:-${B\n", "D").unwrap();
    assert!(stages(&df, &BuildInputs::host(BTreeMap::new())).is_err());
}

#[test]
fn nul_and_invalid_utf8_like_text() {
    survive("FROM \0x\nRUN \u{fffd}\u{fffd}\n");
    survive("\u{feff}\u{feff}FROM x\n");
}

#[test]
fn json_nested_deeply() {
    let src = format!("FROM x\nCMD {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(survive(&src));
}

#[test]
fn escape_at_every_position() {
    for src in [
        "\\",
        "FROM x\\",
        "FROM x\nRUN \\",
        "# escape=`\n`",
        "FROM x\nENV A=\\",
    ] {
        survive(src);
    }
}

#[test]
fn only_a_directive() {
    assert!(parse("# syntax=x\n", "D").is_err());
}
