//! Expansion that would take all memory stops with an error naming the
//! Dockerfile and line (issue #14: 39 doubling ARGs used 20 GB).

use std::collections::BTreeMap;

use strata_frontend::{BuildInputs, Diagnostic, StageScope, parse, stages};

fn inputs() -> BuildInputs {
    BuildInputs {
        build_args: BTreeMap::new(),
        build_platform: "linux/amd64".parse().expect("platform"),
        target_platform: "linux/amd64".parse().expect("platform"),
    }
}

/// The error of the global scope or, when that passes, of the first stage's
/// ARGs, as the solver declares them.
fn first_error(src: &str) -> Option<(usize, String)> {
    let df = parse(src, "Dockerfile").unwrap_or_else(|d| panic!("{}", d.render()));
    let inp = inputs();
    let (global, st) = match stages(&df, &inp) {
        Ok(v) => v,
        Err(Diagnostic { line, message, .. }) => return Some((line, message)),
    };
    let mut scope = StageScope::new();
    for ins in st.iter().flat_map(|s| &s.instructions) {
        if ins.keyword == "arg"
            && let Err(e) = scope.declare(ins, &global, &inp, &|_| None, df.escape)
        {
            let d = df.error(ins, &e.to_string());
            return Some((d.line, d.render()));
        }
    }
    None
}

fn doubling(first_line: &str) -> String {
    let mut src = String::from(first_line);
    src.push_str("\nARG A0=xxxxxxxxxx\n");
    for n in 1..40 {
        src.push_str(&format!("ARG A{n}=${{A{}}}${{A{}}}\n", n - 1, n - 1));
    }
    src
}

#[test]
fn doubling_global_args_stop_at_the_word_cap() {
    // Global scope: lines 2 (A0) to 41 (A39); A17 (line 19) would be 1.3 MB.
    let (line, message) = first_error(&doubling("")).expect("refused");
    assert_eq!(line, 19, "{message}");
    assert!(message.contains("longer than 1048576 bytes"), "{message}");
}

#[test]
fn doubling_stage_args_stop_at_the_word_cap() {
    let (line, message) = first_error(&doubling("FROM scratch")).expect("refused");
    assert_eq!(line, 19, "{message}");
    assert!(
        message.contains("Dockerfile:19") && message.contains("longer than 1048576 bytes"),
        "{message}"
    );
}

#[test]
fn many_large_args_stop_at_the_scope_cap() {
    // 33 values of 512 KiB each: every word is under the cap, their sum
    // (16.5 MiB) is not.
    let mut src = format!("FROM scratch\nARG HALF={}\n", "y".repeat(512 << 10));
    for n in 0..40 {
        src.push_str(&format!("ARG B{n}=$HALF\n"));
    }
    let (line, message) = first_error(&src).expect("refused");
    // HALF is the first 512 KiB; B0..B30 bring it to 16 MiB; B31 passes it.
    assert_eq!(line, 34, "{message}");
    assert!(
        message.contains("ARG values add up to more than 16777216 bytes"),
        "{message}"
    );
}

#[test]
fn ordinary_args_are_untouched() {
    assert_eq!(
        first_error("ARG A=1\nARG B=${A}${A}\nFROM scratch\nARG C=$B$B\n"),
        None
    );
}
