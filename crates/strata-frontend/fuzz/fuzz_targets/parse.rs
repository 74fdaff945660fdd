//! Feeds arbitrary bytes through every stage of the frontend: the raw AST and
//! its dump, the instruction parser, the stage split, and word expansion of
//! every argument. Invariant: nothing panics; errors are diagnostics whose
//! line exists in the input.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.split('\n').count();
    if let Ok((_, nodes)) = strata_frontend::parse_ast(&text, "Dockerfile") {
        let _ = strata_frontend::dump(&nodes);
    }
    let df = match strata_frontend::parse(&text, "Dockerfile") {
        Ok(df) => df,
        Err(d) => {
            assert!(d.line >= 1 && d.line <= lines.max(1), "line {} of {lines}", d.line);
            let _ = d.render();
            return;
        }
    };
    let lookup = |k: &str| (k.len() % 2 == 0).then(|| k.to_owned());
    for ins in &df.instructions {
        let _ = strata_frontend::expand_word(&ins.text, &lookup, df.escape);
        let _ = strata_frontend::split_words(&ins.text, &lookup, df.escape);
        for w in ins.args.words() {
            let _ = strata_frontend::expand_word(&w, &lookup, df.escape);
        }
    }
    let mut args = BTreeMap::new();
    args.insert("A".to_owned(), "x y".to_owned());
    if let Err(d) = strata_frontend::stages(&df, &args) {
        let _ = d.render();
    }
});
