//! Feeds arbitrary bytes through every stage of the frontend: the raw AST and
//! its dump, the instruction parser, word expansion of every argument, the
//! global scope and stage split, the stage graph and the rendered plan; the
//! same bytes as a `.dockerignore` file matched against a few paths.
//! Invariant: nothing panics; errors are diagnostics whose line exists in
//! the input.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use strata_frontend::{BuildInputs, Diagnostic};

fn check(d: &Diagnostic, lines: usize) {
    assert!(d.line >= 1 && d.line <= lines.max(1), "line {} of {lines}", d.line);
    let _ = d.render();
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    if let Ok(ignore) = strata_frontend::Ignore::parse(&text) {
        for path in ["a", "a/b.txt", "src/x/y.rs", ".git/HEAD", "Dockerfile"] {
            let _ = ignore.excluded(path);
            let _ = ignore.descend_excluded(path);
        }
        // Each line also as a path, so patterns meet paths shaped like them.
        for line in text.lines().take(8) {
            let _ = ignore.excluded(line.trim_start_matches('!'));
        }
    }
    match strata_frontend::parse_ast(&text, "Dockerfile") {
        Ok((_, nodes)) => {
            let _ = strata_frontend::dump(&nodes);
        }
        Err(d) => check(&d, lines),
    }
    let df = match strata_frontend::parse(&text, "Dockerfile") {
        Ok(df) => df,
        Err(d) => return check(&d, lines),
    };
    let lookup = |k: &str| (k.len() % 2 == 0).then(|| k.to_owned());
    for ins in &df.instructions {
        let _ = strata_frontend::expand_word(&ins.text, &lookup, df.escape);
        let _ = strata_frontend::split_words(&ins.text, &lookup, df.escape);
        for w in ins.args.words() {
            let _ = strata_frontend::expand_word(&w, &lookup, df.escape);
        }
        let _ = strata_frontend::mount_sources(ins);
    }
    let mut args = BTreeMap::new();
    args.insert("A".to_owned(), "x y".to_owned());
    args.insert("http_proxy".to_owned(), "http://p:3128".to_owned());
    let inputs = BuildInputs::host(args);
    let _ = inputs.proxy_env();
    let (global, stages) = match strata_frontend::stages(&df, &inputs) {
        Ok(v) => v,
        Err(d) => return check(&d, lines),
    };
    for target in [None, stages.first().and_then(|s| s.name.as_deref())] {
        let graph = match strata_frontend::graph(&df, &stages, target) {
            Ok(g) => g,
            Err(d) => return check(&d, lines),
        };
        let _ = graph.levels();
        let base_env = |name: &str| (name.len() % 2 == 0).then(|| vec![format!("B={name}")]);
        if let Err(d) = strata_frontend::render_plan(
            &df,
            &global,
            &stages,
            &graph,
            &inputs,
            &base_env,
            &|_| None,
        ) {
            check(&d, lines);
        }
    }
});
