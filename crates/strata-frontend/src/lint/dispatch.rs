//! The passes that fire the rules, in the reference's order: parse-time
//! rules, stage-list rules, FROM arguments, then a dry dispatch of each
//! stage with the environment its steps would see.

use std::collections::BTreeSet;

use super::env::{StageState, expand_tracked, global_value};
use super::findings::{CheckError, Hint, LintOptions, Scope, Sink, range, range_in};
use super::rules;
use super::stage::StageDispatch;
use crate::expand::expand_word;
use crate::parse::{Dockerfile, Instruction};
use crate::plan::{env_get, env_set};
use crate::suggest::closest as suggest;
use crate::{BuildInputs, GlobalScope, Platform, mount_sources, reference_error};

/// Stage names the reference reserves (`FROM scratch`, the named context).
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// A stage as the checks see it: its FROM and its instructions, by index
/// into `Dockerfile::instructions`.
pub(super) struct StageRef {
    from: usize,
    /// Lowercased, as stage names are case-insensitive.
    name: Option<String>,
    body: Vec<usize>,
}

/// The rules the reference fires while it parses: the parser's warnings,
/// then each instruction's (casing, MAINTAINER, definition comments), in
/// order; returns the stage list. Also run over the
/// instructions before one that fails to parse, as the reference reports
/// those warnings beside the parse error.
pub(super) fn parse_time(df: &Dockerfile, sink: &mut Sink) -> Vec<StageRef> {
    // The parser's warnings come first.
    for (i, ins) in df.instructions.iter().enumerate() {
        if df.trivia(i).is_some_and(|t| t.empty_continuation_line) {
            sink.warn(
                &rules::NO_EMPTY_CONTINUATION,
                "Empty continuation line".into(),
                vec![(ins.end_line, ins.end_line)],
            );
        }
    }

    // Parse-time rules, instruction by instruction, and the stage list.
    let mut stages: Vec<StageRef> = Vec::new();
    for (i, ins) in df.instructions.iter().enumerate() {
        let written = df
            .trivia(i)
            .map_or(ins.keyword.as_str(), |t| t.keyword.as_str());
        match ins.keyword.as_str() {
            "maintainer" => sink.warn(
                &rules::MAINTAINER_DEPRECATED,
                "Maintainer instruction is deprecated in favor of using label".into(),
                range(ins),
            ),
            "from" => {
                let words = ins.args.words();
                if let [_, as_, name] = words.as_slice() {
                    if *name != name.to_lowercase() {
                        sink.warn(
                            &rules::STAGE_NAME_CASING,
                            format!("Stage name '{name}' should be lowercase"),
                            range(ins),
                        );
                    }
                    let from_lower = written == written.to_lowercase();
                    let from_upper = written == written.to_uppercase();
                    let as_ok = if from_lower {
                        *as_ == as_.to_lowercase()
                    } else if from_upper {
                        *as_ == as_.to_uppercase()
                    } else {
                        true
                    };
                    if !as_ok {
                        sink.warn(
                            &rules::FROM_AS_CASING,
                            format!("'{as_}' and '{written}' keywords' casing do not match"),
                            range(ins),
                        );
                    }
                }
                let name = match words.as_slice() {
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_lowercase()),
                    _ => None,
                };
                if let Some(n) = &name {
                    definition_description(df, i, "FROM", std::slice::from_ref(n), sink);
                }
                stages.push(StageRef {
                    from: i,
                    name,
                    body: Vec::new(),
                });
            }
            "arg" => {
                let keys: Vec<String> = ins.arg_pairs().into_iter().map(|(k, _)| k).collect();
                definition_description(df, i, "ARG", &keys, sink);
            }
            _ => {}
        }
        if ins.keyword != "from"
            && let Some(s) = stages.last_mut()
        {
            s.body.push(i);
        }
    }
    stages
}

pub(super) fn run(
    df: &Dockerfile,
    opts: &LintOptions,
    sink: &mut Sink,
    hints: &mut Vec<Hint>,
) -> Result<(), CheckError> {
    let stages = parse_time(df, sink);

    // Stage names, then instruction casing (stages only, as there: the
    // ARGs before the first FROM are not counted).
    let mut seen: Vec<&str> = Vec::new();
    for s in &stages {
        if let Some(n) = &s.name {
            let ins = &df.instructions[s.from];
            if RESERVED_STAGE_NAMES.contains(&n.as_str()) {
                sink.warn(
                    &rules::RESERVED_STAGE_NAME,
                    format!("Stage name should not use the same name as reserved stage {n:?}"),
                    range(ins),
                );
            }
            if seen.contains(&n.as_str()) {
                sink.warn(
                    &rules::DUPLICATE_STAGE_NAME,
                    format!("Duplicate stage name {n:?}, stage names should be unique"),
                    range(ins),
                );
            }
            seen.push(n);
        }
    }
    command_casing(df, &stages, sink);

    // FROM lines: with defaults only, then with the build's args.
    let defaults_only = BuildInputs {
        build_args: Default::default(),
        ..opts.inputs.clone()
    };
    if let Ok(defaults) = GlobalScope::new(df, &defaults_only) {
        for s in &stages {
            let ins = &df.instructions[s.from];
            let Some(base) = ins.args.words().into_iter().next() else {
                continue;
            };
            let Ok(result) = expand_word(&base, &|k| global_value(&defaults, k), df.escape) else {
                break;
            };
            if reference_error(&result).is_some() {
                sink.warn(
                    &rules::INVALID_DEFAULT_ARG_IN_FROM,
                    format!(
                        "Default value for ARG {base} results in empty or invalid base image name"
                    ),
                    range(ins),
                );
            }
        }
    }
    let global = GlobalScope::new(df, opts.inputs).map_err(|d| CheckError {
        message: d.message,
        ranges: vec![(d.line, d.line)],
        from_checks: false,
    })?;
    let arg_keys: Vec<&str> = global.vars().iter().map(|(k, _)| k.as_str()).collect();
    let mut bases: Vec<String> = Vec::new();
    for s in &stages {
        let ins = &df.instructions[s.from];
        let base = ins.args.words().into_iter().next().unwrap_or_default();
        let (result, _, unmatched) =
            expand_tracked(&base, df.escape, &|k| global_value(&global, k));
        undefined_args_in_from(&unmatched, &arg_keys, ins, sink);
        if result.is_empty() {
            return Err(CheckError {
                message: format!("base name ({base}) should not be blank"),
                ranges: range(ins),
                from_checks: false,
            });
        }
        bases.push(result);
        if let Some(p) = ins.flag("platform") {
            let (result, matched, unmatched) =
                expand_tracked(p, df.escape, &|k| global_value(&global, k));
            undefined_args_in_from(&unmatched, &arg_keys, ins, sink);
            if matched.len() == 1
                && unmatched.is_empty()
                && matched.contains("TARGETPLATFORM")
                && global_value(&global, "TARGETPLATFORM").as_deref() == Some(result.as_str())
            {
                sink.warn(
                    &rules::REDUNDANT_TARGET_PLATFORM,
                    format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                    range(ins),
                );
            }
            if result.is_empty() {
                return Err(CheckError {
                    message: format!("empty platform value from expression {p}"),
                    ranges: range(ins),
                    from_checks: false,
                });
            }
            if matched.is_empty()
                && unmatched.is_empty()
                && let Ok(platform) = result.parse::<Platform>()
            {
                let name = s.name.as_deref().unwrap_or("");
                if !name.contains(&platform.os) && !name.contains(&platform.architecture) {
                    sink.warn(
                        &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED,
                        format!("FROM --platform flag should not use constant value {result:?}"),
                        range(ins),
                    );
                }
            }
        }
    }

    // Which stages a base or `--from` names (earlier stages only for FROM).
    // `--from` names are matched case-insensitively, a FROM base as
    // written (the reference's `findStateByName` and `addState`).
    let stage_index = |name: &str, before: usize| -> Option<usize> {
        let lower = name.to_lowercase();
        stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    };
    let base_stage: Vec<Option<usize>> = (0..stages.len())
        .map(|i| {
            stages[..i]
                .iter()
                .position(|s| s.name.as_deref() == Some(bases[i].as_str()))
        })
        .collect();
    let deps: Vec<Vec<usize>> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut d: Vec<usize> = base_stage[i].into_iter().collect();
            for &j in &s.body {
                let ins = &df.instructions[j];
                let mut names: Vec<String> = mount_sources(ins);
                if ins.keyword == "copy" {
                    names.extend(ins.flag("from").map(str::to_owned));
                }
                for n in names {
                    let hit = match n.parse::<usize>() {
                        Ok(k) if k < stages.len() => Some(k),
                        Ok(_) => None,
                        Err(_) => stage_index(&n, stages.len()),
                    };
                    match hit {
                        Some(k) => d.push(k),
                        None => near_stage_hint(&n, &stages, ins, hints),
                    }
                }
            }
            d
        })
        .collect();
    let dispatched: Vec<bool> = match (opts.scope, opts.target) {
        (Scope::Check, None) => vec![true; stages.len()],
        (_, target) => {
            let t = match target {
                Some(t) => stage_index(t, stages.len()),
                None => stages.len().checked_sub(1),
            };
            let mut on = vec![false; stages.len()];
            let mut todo: Vec<usize> = t.into_iter().collect();
            while let Some(k) = todo.pop() {
                if !std::mem::replace(&mut on[k], true) {
                    todo.extend(&deps[k]);
                }
            }
            on
        }
    };

    // The reference resolves every needed base image before dispatching
    // any stage; a name that is no reference stops the build there.
    for (i, s) in stages.iter().enumerate() {
        if dispatched[i] && base_stage[i].is_none() && !bases[i].eq_ignore_ascii_case("scratch") {
            let ins = &df.instructions[s.from];
            if let Some(why) = reference_error(&bases[i]) {
                return Err(CheckError {
                    message: format!("failed to parse stage name {:?}: {why}", bases[i]),
                    ranges: range(ins),
                    from_checks: false,
                });
            }
            let expected = match ins.flag("platform") {
                Some(p) => expand_word(p, &|k| global_value(&global, k), df.escape)
                    .ok()
                    .and_then(|v| v.parse::<Platform>().ok()),
                None => Some(opts.inputs.target_platform.clone()),
            };
            if let (Some(expected), Some(actual)) = (expected, (opts.base_platform)(&bases[i]))
                && (expected.os != actual.os || expected.architecture != actual.architecture)
            {
                sink.warn(
                        &rules::INVALID_BASE_IMAGE_PLATFORM,
                        format!("Base image {} was pulled with platform {:?}, expected {:?} for current build", bases[i], actual.to_string(), expected.to_string()),
                        range(ins),
                    );
            }
        }
    }

    // The dry dispatch, in stage order (a base is always earlier).
    let mut finished: Vec<StageState> = Vec::with_capacity(stages.len());
    for (i, s) in stages.iter().enumerate() {
        let mut st = match base_stage[i] {
            Some(b) => finished[b].clone(),
            None if bases[i].eq_ignore_ascii_case("scratch") => StageState::default(),
            None => StageState {
                env: (opts.base_env)(&bases[i]).unwrap_or_default(),
                ..StageState::default()
            },
        };
        if env_get(&st.env, "PATH").is_none() {
            let path = crate::DEFAULT_PATH.trim_start_matches("PATH=");
            env_set(&mut st.env, "PATH", path);
        }
        if dispatched[i] {
            let mut d = StageDispatch::new(df, opts, &global, st);
            for &j in &s.body {
                let ins = &df.instructions[j];
                d.instruction(ins, df.trivia(j).map(|t| t.keyword.as_str()), sink)
                    .map_err(|message| CheckError {
                        message,
                        ranges: range(ins),
                        from_checks: false,
                    })?;
            }
            st = d.into_state();
        }
        finished.push(st);
    }
    Ok(())
}

fn undefined_args_in_from(
    unmatched: &BTreeSet<String>,
    arg_keys: &[&str],
    ins: &Instruction,
    sink: &mut Sink,
) {
    for arg in unmatched {
        if arg_keys.contains(&arg.as_str()) {
            continue;
        }
        let mut detail = format!("FROM argument '{arg}' is not declared");
        if let Some(s) = suggest(arg, arg_keys.iter().copied(), true) {
            detail.push_str(&format!(" (did you mean {s}?)"));
        }
        sink.warn(&rules::UNDEFINED_ARG_IN_FROM, detail, range(ins));
    }
}

/// InvalidDefinitionDescription: the last comment line above a FROM ... AS
/// or ARG should start with the name it describes.
fn definition_description(
    df: &Dockerfile,
    index: usize,
    instruction: &str,
    keys: &[String],
    sink: &mut Sink,
) {
    let Some(last) = df.trivia(index).and_then(|t| t.comments.last()) else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let first_word = last.split(' ').next().unwrap_or_default();
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>"
    } else {
        keys[0].as_str()
    };
    sink.warn(
        &rules::INVALID_DEFINITION_DESCRIPTION,
        format!("Comment for {instruction} should follow the format: `# {example} <description>`"),
        range(&df.instructions[index]),
    );
}

/// ConsistentInstructionCasing: each keyword must be all lower or all
/// upper case, and match the majority (upper case on a tie).
fn command_casing(df: &Dockerfile, stages: &[StageRef], sink: &mut Sink) {
    let written = |i: usize| {
        df.trivia(i)
            .map_or(df.instructions[i].keyword.clone(), |t| t.keyword.clone())
    };
    let all: Vec<usize> = stages
        .iter()
        .flat_map(|s| std::iter::once(s.from).chain(s.body.iter().copied()))
        .collect();
    let (mut lower, mut upper) = (0, 0);
    for &i in &all {
        let w = written(i);
        if w == w.to_lowercase() {
            lower += 1;
        } else if w == w.to_uppercase() {
            upper += 1;
        }
    }
    let majority_lower = lower > upper;
    for &i in &all {
        let w = written(i);
        let casing = if majority_lower && w != w.to_lowercase() {
            "lowercase"
        } else if !majority_lower && w != w.to_uppercase() {
            "uppercase"
        } else {
            continue;
        };
        sink.warn(
            &rules::CONSISTENT_INSTRUCTION_CASING,
            format!("Command '{w}' should match the case of the command majority ({casing})"),
            range_in(df, &df.instructions[i]),
        );
    }
}

/// A `--from` naming no stage is an image to BuildKit; when it is one edit
/// or two from a stage name, say so now rather than after a failed pull.
fn near_stage_hint(name: &str, stages: &[StageRef], ins: &Instruction, hints: &mut Vec<Hint>) {
    if name.contains(['/', ':', '@']) {
        return;
    }
    let names = stages.iter().filter_map(|s| s.name.as_deref());
    if let Some(s) = suggest(name, names, false) {
        hints.push(Hint {
            line: ins.line,
            message: if ins.keyword == "copy" {
                format!(
                    "COPY --from={name} names no stage, so it is pulled as an image (did you mean {s}?)"
                )
            } else {
                format!(
                    "RUN --mount from={name} names no stage, so it is pulled as an image (did you mean {s}?)"
                )
            },
        });
    }
}
