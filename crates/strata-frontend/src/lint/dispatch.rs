//! The passes that fire the rules, in the reference's order: parse-time
//! rules, stage-list rules, FROM arguments, then a dry dispatch of each
//! stage with the environment its steps would see.

use std::cell::RefCell;
use std::collections::BTreeSet;

use super::rules;
use super::{CheckError, Hint, LintOptions, Scope, Sink, suggest};
use crate::expand::{expand_word, split_words};
use crate::parse::{Args, Dockerfile, Instruction};
use crate::plan::{env_get, env_set};
use crate::{BuildInputs, GlobalScope, Platform, mount_sources, reference_error};

/// Build args the reference never puts in a step's environment, so never
/// reports as undefined.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

/// Stage names the reference reserves (`FROM scratch`, the named context).
const RESERVED_STAGE_NAMES: &[&str] = &["context", "scratch"];

/// A stage as the checks see it: its FROM and its instructions, by index
/// into `Dockerfile::instructions`.
struct StageRef {
    from: usize,
    /// Lowercased, as stage names are case-insensitive.
    name: Option<String>,
    body: Vec<usize>,
}

/// What a dispatched stage leaves for stages built on it.
#[derive(Clone, Default)]
struct StageState {
    /// `KEY=VALUE`, in the order they were set.
    env: Vec<String>,
    /// A SHELL was set (then shell-form CMD is what the author chose).
    shell_set: bool,
    /// ARG names declared (never "undefined", even unset).
    declared: Vec<String>,
    /// A WORKDIR was set in this Dockerfile.
    workdir_set: bool,
}

fn range(ins: &Instruction) -> Vec<(usize, usize)> {
    vec![(ins.line, ins.end_line.max(ins.line))]
}

/// `range` with heredoc bodies included, as the reference's node location.
fn range_in(df: &Dockerfile, ins: &Instruction) -> Vec<(usize, usize)> {
    let last = df
        .instructions
        .iter()
        .position(|i| i.line == ins.line)
        .and_then(|k| df.trivia(k))
        .map_or(ins.end_line, |t| t.last_line);
    vec![(ins.line, last.max(ins.line))]
}

pub(super) fn run(
    df: &Dockerfile,
    opts: &LintOptions,
    sink: &mut Sink,
    hints: &mut Vec<Hint>,
) -> Result<(), CheckError> {
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
    let mut meta_args: Vec<usize> = Vec::new();
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
        if ins.keyword != "from" {
            match stages.last_mut() {
                Some(s) => s.body.push(i),
                None if ins.keyword == "arg" => meta_args.push(i),
                None => {}
            }
        }
    }

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
            let mut d = StageDispatch {
                df,
                opts,
                global: &global,
                state: st,
                cmd: None,
                entrypoint: None,
                healthcheck: None,
            };
            for &j in &s.body {
                let ins = &df.instructions[j];
                d.instruction(ins, df.trivia(j).map(|t| t.keyword.as_str()), sink)
                    .map_err(|message| CheckError {
                        message,
                        ranges: range(ins),
                        from_checks: false,
                    })?;
            }
            st = d.state;
        }
        finished.push(st);
    }
    Ok(())
}

/// A global value as FROM lines see it: set ARGs only (one declared
/// without a value is unmatched, as in the reference's meta-arg list).
fn global_value(global: &GlobalScope, k: &str) -> Option<String> {
    global.get(k).flatten().map(str::to_owned)
}

/// Expands `word`, returning the result and which variables were found
/// and not found (the reference's `ProcessWordWithMatches`).
fn expand_tracked(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, BTreeSet<String>, BTreeSet<String>) {
    let matched = RefCell::new(BTreeSet::new());
    let unmatched = RefCell::new(BTreeSet::new());
    let tracking = |k: &str| {
        let v = lookup(k);
        match &v {
            Some(_) => matched.borrow_mut().insert(k.to_owned()),
            None => unmatched.borrow_mut().insert(k.to_owned()),
        };
        v
    };
    let result = expand_word(word, &tracking, escape).unwrap_or_default();
    (result, matched.into_inner(), unmatched.into_inner())
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

/// The secret-looking names SecretsUsedInArgOrEnv flags: a token from the
/// list as the whole name or its first or last `_` word, unless a `public`
/// word is there too.
fn looks_secret(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let has = |tokens: &[&str]| {
        let lower = key.to_lowercase();
        tokens.iter().any(|t| {
            lower == *t
                || lower.starts_with(&format!("{t}_"))
                || lower.ends_with(&format!("_{t}"))
                || lower.contains(&format!("_{t}_"))
        })
    };
    has(DENY) && !has(&["public"])
}

/// One stage being dispatched.
struct StageDispatch<'a, 'o> {
    df: &'a Dockerfile,
    opts: &'a LintOptions<'o>,
    global: &'a GlobalScope,
    /// What a stage built on this one inherits (the reference's
    /// `dispatchState.init`: state, image, `workdirSet`, `buildArgs`).
    state: StageState,
    cmd: Option<Vec<(usize, usize)>>,
    entrypoint: Option<Vec<(usize, usize)>>,
    healthcheck: Option<Vec<(usize, usize)>>,
}

impl StageDispatch<'_, '_> {
    /// Expands one word with the stage's environment, reporting each
    /// variable it uses that is neither set nor a declared ARG.
    fn expand(&self, word: &str, escape: char, ins: &Instruction, sink: &mut Sink) -> String {
        let env = &self.state.env;
        let (result, _, unmatched) = expand_tracked(word, escape, &|k| env_get(env, k));
        for var in unmatched {
            if self.state.declared.contains(&var) || NON_ENV_ARGS.contains(&var.as_str()) {
                continue;
            }
            let keys = env
                .iter()
                .map(|kv| kv.split_once('=').map_or(kv.as_str(), |p| p.0));
            let mut detail = format!("Usage of undefined variable '${var}'");
            if let Some(s) = suggest(&var, keys, true) {
                detail.push_str(&format!(" (did you mean ${s}?)"));
            }
            sink.warn(&rules::UNDEFINED_VAR, detail, range_in(self.df, ins));
        }
        result
    }

    /// Dispatches one instruction; an error is one that stops the
    /// reference's dispatch (and so its later checks).
    fn instruction(
        &mut self,
        ins: &Instruction,
        written: Option<&str>,
        sink: &mut Sink,
    ) -> Result<(), String> {
        let name = written.unwrap_or(&ins.keyword);
        let esc = self.df.escape;
        match ins.keyword.as_str() {
            "env" | "label" => {
                let pairs = key_value_pairs(&ins.args);
                let expanded: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v, _)| {
                        (
                            self.expand(k, esc, ins, sink),
                            self.expand(v, esc, ins, sink),
                        )
                    })
                    .collect();
                for ((_, _, legacy), (k, v)) in pairs.iter().zip(expanded) {
                    if *legacy {
                        sink.warn(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                            range_in(self.df, ins),
                        );
                    }
                    if ins.keyword == "env" {
                        self.secret("ENV", &k, ins, sink);
                        env_set(&mut self.state.env, &k, &v);
                    }
                }
            }
            "add" | "copy" => self.copy(ins, sink),
            "workdir" => {
                let path = self.expand(ins.args.words().join(" ").as_str(), esc, ins, sink);
                if !self.state.workdir_set && !path.starts_with('/') {
                    sink.warn(
                        &rules::WORKDIR_RELATIVE_PATH,
                        format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                        range_in(self.df, ins),
                    );
                }
                self.state.workdir_set = true;
            }
            "run" => {
                for m in ins.flag_all("mount") {
                    self.expand(m, esc, ins, sink);
                }
            }
            "user" => {
                self.expand(&ins.args.words().join(" "), esc, ins, sink);
            }
            "stopsignal" => {
                let signal = self.expand(&ins.args.words().join(" "), esc, ins, sink);
                if !valid_signal(&signal) {
                    return Err(format!("invalid signal: {signal}"));
                }
            }
            "volume" => {
                for w in ins.args.words() {
                    if self.expand(&w, esc, ins, sink).is_empty() {
                        return Err("VOLUME specified can not be an empty string".into());
                    }
                }
            }
            "cmd" | "entrypoint" => {
                let tracker = if ins.keyword == "cmd" {
                    &mut self.cmd
                } else {
                    &mut self.entrypoint
                };
                used_once(tracker, name, ins, sink);
                if matches!(ins.args, Args::Shell(_)) && !self.state.shell_set {
                    sink.warn(
                        &rules::JSON_ARGS_RECOMMENDED,
                        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        range_in(self.df, ins),
                    );
                }
            }
            "healthcheck" => used_once(&mut self.healthcheck, name, ins, sink),
            "expose" => self.expose(ins, sink),
            "shell" => self.state.shell_set = matches!(&ins.args, Args::Exec(v) if !v.is_empty()),
            "arg" => self.arg(ins, sink),
            _ => {}
        }
        Ok(())
    }

    fn secret(&self, instruction: &str, key: &str, ins: &Instruction, sink: &mut Sink) {
        if looks_secret(key) {
            sink.warn(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
                range_in(self.df, ins),
            );
        }
    }

    fn copy(&mut self, ins: &Instruction, sink: &mut Sink) {
        let esc = self.df.escape;
        let is_add = ins.keyword == "add";
        let mut flags = vec!["chown", "chmod"];
        if is_add {
            flags.push("checksum");
        }
        for f in flags {
            self.expand(ins.flag(f).unwrap_or(""), esc, ins, sink);
        }
        let heredoc_names: Vec<&str> = ins.heredocs.iter().map(|h| h.name.as_str()).collect();
        let words: Vec<String> = ins
            .args
            .words()
            .into_iter()
            .filter(|w| !is_heredoc_word(w, &heredoc_names))
            .collect();
        let sources: Vec<String> = words
            .iter()
            .map(|w| self.expand(w, esc, ins, sink))
            .collect();
        for h in &ins.heredocs {
            if !h.quoted {
                self.expand(&h.content, '\\', ins, sink);
            }
        }
        let Some((_, sources)) = sources.split_last() else {
            return;
        };
        let from_context = is_add || ins.flag("from").is_none();
        if let (Some(ignore), true) = (self.opts.ignore, from_context) {
            for src in sources {
                if src.contains("://") || src.starts_with("git@") {
                    continue;
                }
                if ignore.excluded(src) {
                    let verb = if is_add { "Add" } else { "Copy" };
                    sink.warn(
                        &rules::COPY_IGNORED_FILE,
                        format!(
                            "Attempting to {verb} file {src:?} that is excluded by .dockerignore"
                        ),
                        range_in(self.df, ins),
                    );
                }
            }
        }
    }

    fn expose(&self, ins: &Instruction, sink: &mut Sink) {
        let env = &self.state.env;
        let text = match &ins.args {
            Args::Shell(t) => t.clone(),
            Args::Exec(v) => v.join(" "),
        };
        let Ok(ports) = split_words(&text, &|k| env_get(env, k), self.df.escape) else {
            return;
        };
        for raw in ports {
            let parts: Vec<&str> = raw.split(':').collect();
            let (ip, host_port, container) = match parts.as_slice() {
                [c] => ("".to_owned(), "", *c),
                [h, c] => ("".to_owned(), *h, *c),
                [ip @ .., h, c] => (ip.join(":"), *h, *c),
                [] => continue,
            };
            let (port, proto) = container.split_once('/').unwrap_or((container, ""));
            if port.is_empty()
                || !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp")
            {
                // The reference stops the build here; strata's own EXPOSE
                // handling reports it.
                return;
            }
            if proto != proto.to_lowercase() {
                sink.warn(
                    &rules::EXPOSE_PROTO_CASING,
                    format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
                    range_in(self.df, ins),
                );
            }
            if !ip.is_empty() || !host_port.is_empty() {
                sink.warn(
                    &rules::EXPOSE_INVALID_FORMAT,
                    format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
                    range_in(self.df, ins),
                );
            }
        }
    }

    fn arg(&mut self, ins: &Instruction, sink: &mut Sink) {
        for (key, default) in ins.arg_pairs() {
            self.secret("ARG", &key, ins, sink);
            let value = match (self.opts.inputs.build_args.get(&key), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(self.expand(&d, self.df.escape, ins, sink)),
                (None, None) => global_value(self.global, &key),
            };
            if let Some(v) = value
                && !NON_ENV_ARGS.contains(&key.as_str())
            {
                env_set(&mut self.state.env, &key, &v);
            }
            self.state.declared.push(key);
        }
    }
}

/// What moby's `signal.ParseSignal` accepts: a number, or a Linux signal
/// name with or without `SIG`.
fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse::<u32>().is_ok_and(|n| n > 0);
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.contains(&name)
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', '-']))
}

/// MultipleInstructionsDisallowed points at the earlier instruction, the
/// one that has no effect.
fn used_once(
    tracker: &mut Option<Vec<(usize, usize)>>,
    name: &str,
    ins: &Instruction,
    sink: &mut Sink,
) {
    if let Some(previous) = tracker.take() {
        sink.warn(
            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
            previous,
        );
    }
    *tracker = Some(range(ins));
}

/// `[fd]<<[-]NAME` words that introduce a heredoc source.
fn is_heredoc_word(word: &str, names: &[&str]) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name: String = rest.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
    names.contains(&name.as_str())
}

/// ENV/LABEL `(key, value, legacy)` words, unexpanded: `KEY VALUE...` (the
/// legacy form, one pair) when the first word has no `=`, else `K=V` words.
fn key_value_pairs(args: &Args) -> Vec<(String, String, bool)> {
    let words = args.words();
    match words.first() {
        None => Vec::new(),
        Some(first) if !first.contains('=') => {
            let text = match args {
                Args::Shell(t) => t.as_str(),
                Args::Exec(_) => "",
            };
            let rest = text
                .trim_start()
                .split_once(char::is_whitespace)
                .map_or("", |p| p.1.trim_start());
            vec![(first.clone(), rest.to_owned(), true)]
        }
        Some(_) => words
            .iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned(), false),
                None => (w.clone(), String::new(), false),
            })
            .collect(),
    }
}
