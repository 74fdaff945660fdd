//! The resolved plan as text (`strata build --print`): stages, what each
//! reads, which run at once, what `--target` prunes, and every instruction
//! with its words expanded where the reference expands them. Nothing runs.
//!
//! Expanded (the reference's `SupportsSingleWordExpansion` commands and
//! dispatchers): FROM's base and `--platform` (global scope), ARG defaults,
//! ENV, LABEL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, COPY/ADD sources,
//! destination, `--chown`, `--chmod` and unquoted heredocs, RUN's
//! `--mount` options. Left as written: RUN's command (the shell expands
//! it), CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD, MAINTAINER, and
//! `COPY --from`, which the reference never expands.

use std::fmt::Write as _;

use crate::expand::{expand_word, split_words};
use crate::graph::{EdgeKind, Graph, Source, stage_label};
use crate::parse::{Args, Dockerfile, Instruction};
use crate::scope::{BuildInputs, GlobalScope, StageScope};
use crate::{Diagnostic, Stage};

/// The PATH every stage has when its base sets none (the reference's
/// `system.DefaultPathEnv` for Linux).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the plan needs to know about base images: their ENV, when the
/// caller has them (strata's store); `None` prints the base as unknown.
pub type BaseEnv<'a> = &'a dyn Fn(&str) -> Option<Vec<String>>;

/// What the plan knows of named contexts (`--build-context`): for a name
/// (a FROM base, a `--from`, a stage name), what it stands for
/// (`directory /src`), if a named context has that name. The caller
/// compares names as buildx does.
pub type NamedContexts<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Renders the plan, naming the named contexts each stage reads and the
/// stages they replace (whose instructions do not run); `contexts` answers
/// `None` for every name when there are none. `graph` is the one the build
/// runs: replaced stages read nothing. Deterministic: the same inputs give
/// the same bytes.
pub fn render_plan(
    df: &Dockerfile,
    global: &GlobalScope,
    stages: &[Stage],
    graph: &Graph,
    inputs: &BuildInputs,
    base_env: BaseEnv<'_>,
    contexts: NamedContexts<'_>,
) -> Result<String, Diagnostic> {
    let image_or_context = |n: &str| match contexts(n) {
        Some(what) => format!("context {n} ({what})"),
        None => format!("image {n}"),
    };
    let replaced_by = |s: &Stage| {
        s.name
            .as_deref()
            .and_then(|n| contexts(n).map(|w| (n.to_owned(), w)))
    };
    let mut out = String::new();
    let target = &stages[graph.target];
    let _ = writeln!(
        out,
        "plan for {}: target stage {} (#{}), {} of {} stages needed",
        df.file,
        stage_label(target),
        target.index,
        graph.needed.len(),
        stages.len()
    );
    let _ = writeln!(
        out,
        "platforms: build {}, target {}",
        inputs.build_platform, inputs.target_platform
    );

    let _ = writeln!(out, "\nglobal args:");
    for (k, v) in global.vars() {
        match v {
            Some(v) => {
                let _ = writeln!(out, "  {k}={}", quote(v));
            }
            None => {
                let _ = writeln!(out, "  {k} (unset)");
            }
        }
    }

    let _ = writeln!(out, "\nstages:");
    for s in stages {
        let status = if graph.needed.contains(&s.index) {
            match graph.depth[s.index] {
                Some(d) => format!("level {d}"),
                None => "needed".to_owned(),
            }
        } else {
            "pruned by --target".to_owned()
        };
        if let Some((n, what)) = replaced_by(s) {
            let _ = writeln!(
                out,
                "  #{} {}: replaced by context {n} ({what}) [{status}]",
                s.index,
                stage_label(s)
            );
            continue;
        }
        let base = match &graph.edges[s.index].first().map(|e| &e.source) {
            Some(Source::Stage(i)) => format!("stage {}", stage_label(&stages[*i])),
            _ => image_or_context(&s.base),
        };
        let platform = s
            .platform
            .as_ref()
            .map(|p| format!(" --platform={p}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  #{} {}: FROM{platform} {base} [{status}]",
            s.index,
            stage_label(s)
        );
        for e in &graph.edges[s.index] {
            let how = match e.kind {
                EdgeKind::Base => continue,
                EdgeKind::CopyFrom => "COPY --from",
                EdgeKind::MountFrom => "RUN --mount from",
            };
            let what = match &e.source {
                Source::Stage(i) => format!("stage {}", stage_label(&stages[*i])),
                Source::Image(n) => image_or_context(n),
            };
            let _ = writeln!(out, "      reads {what} ({how}, line {})", e.line);
        }
    }

    let _ = writeln!(out, "\nparallel levels (stages of one level run at once):");
    for (d, level) in graph.levels().iter().enumerate() {
        let names: Vec<String> = level.iter().map(|&i| stage_label(&stages[i])).collect();
        let _ = writeln!(out, "  level {d}: {}", names.join(", "));
    }
    let pruned: Vec<String> = graph
        .pruned()
        .iter()
        .map(|&i| stage_label(&stages[i]))
        .collect();
    let _ = writeln!(
        out,
        "pruned by --target: {}",
        if pruned.is_empty() {
            "none".to_owned()
        } else {
            pruned.join(", ")
        }
    );

    // Each needed stage's instructions, expanded with the ENV it inherits.
    let mut final_env: Vec<Option<Vec<String>>> = vec![None; stages.len()];
    for &i in &graph.needed {
        let s = &stages[i];
        let inherited = match graph.edges[i].first().map(|e| &e.source) {
            Some(Source::Stage(b)) => final_env[*b].clone(),
            _ if s.base == "scratch" => Some(vec![DEFAULT_PATH.to_owned()]),
            _ => base_env(&s.base),
        };
        let _ = writeln!(out, "\nstage #{} {}:", s.index, stage_label(s));
        if let Some((n, what)) = replaced_by(s) {
            let _ = writeln!(
                out,
                "        replaced by context {n} ({what}): its instructions do not run"
            );
            final_env[i] = base_env(&n);
            continue;
        }
        let _ = writeln!(
            out,
            "  {:>4}  FROM {}{}{}",
            s.from.line,
            s.platform
                .as_ref()
                .map(|p| format!("--platform={p} "))
                .unwrap_or_default(),
            s.base,
            s.name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default()
        );
        if inherited.is_none() {
            let _ = writeln!(
                out,
                "        (the ENV of image {} is unknown: not in the local store)",
                s.base
            );
        }
        let mut env = inherited.clone().unwrap_or_default();
        let mut args = StageScope::new();
        for ins in &s.instructions {
            let line = expand_instruction(df, ins, &mut env, &mut args, global, inputs)?;
            let _ = writeln!(out, "  {:>4}  {line}", ins.line);
        }
        final_env[i] = inherited.map(|_| env);
    }
    Ok(out)
}

/// The value of `k` in a `K=V` environment list (the last one wins).
pub fn env_get(env: &[String], k: &str) -> Option<String> {
    env.iter().rev().find_map(|e| {
        e.split_once('=')
            .filter(|(n, _)| *n == k)
            .map(|(_, v)| v.to_owned())
    })
}

/// Sets `k` in a `K=V` environment list. A variable set again keeps the
/// place it first had, as the reference's `addEnv` does (`ENV PATH=...`
/// later does not move PATH to the end); a new one goes last.
pub fn env_set(env: &mut Vec<String>, k: &str, v: &str) {
    let is_k = |e: &String| e.split_once('=').map(|(n, _)| n) == Some(k) || e == k;
    match env.iter().position(is_k) {
        Some(first) => {
            env[first] = format!("{k}={v}");
            let mut i = 0;
            env.retain(|e| {
                i += 1;
                i - 1 == first || !is_k(e)
            });
        }
        None => env.push(format!("{k}={v}")),
    }
}

/// A value as a shell word: bare when that reads back the same.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@,+=%^~".contains(c))
    {
        v.to_owned()
    } else {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// One instruction as the plan shows it, updating the stage's ENV and ARGs.
fn expand_instruction(
    df: &Dockerfile,
    ins: &Instruction,
    env: &mut Vec<String>,
    args: &mut StageScope,
    global: &GlobalScope,
    inputs: &BuildInputs,
) -> Result<String, Diagnostic> {
    let kw = ins.keyword.to_uppercase();
    let snapshot = env.clone();
    let lookup = |k: &str| env_get(&snapshot, k).or_else(|| args.get(k));
    let fail = |e: crate::ExpandError| df.error(ins, &e.to_string());
    let word = |w: &str| expand_word(w, &lookup, df.escape).map_err(fail);
    let words = || -> Result<Vec<String>, Diagnostic> {
        match &ins.args {
            Args::Exec(v) => v.iter().map(|w| word(w)).collect(),
            Args::Shell(s) => split_words(s, &lookup, df.escape).map_err(fail),
        }
    };
    let flags = |expand: &[&str]| -> Result<String, Diagnostic> {
        let mut s = String::new();
        for (n, v) in &ins.flags {
            match v {
                Some(v) if expand.contains(&n.as_str()) => {
                    let _ = write!(s, "--{n}={} ", word(v)?);
                }
                Some(v) => {
                    let _ = write!(s, "--{n}={v} ");
                }
                None => {
                    let _ = write!(s, "--{n} ");
                }
            }
        }
        Ok(s)
    };
    let line = match ins.keyword.as_str() {
        "arg" => {
            let env_now = env.clone();
            args.declare(
                ins,
                global,
                inputs,
                &|k: &str| env_get(&env_now, k),
                df.escape,
            )
            .map_err(fail)?
        }
        "env" | "label" => {
            let w = words()?;
            let pairs: Vec<(String, String)> = if !w.first().is_some_and(|f| f.contains('=')) {
                // Legacy `ENV key value with spaces`.
                let (k, v) = ins
                    .text
                    .split_once(char::is_whitespace)
                    .unwrap_or((&ins.text, ""));
                vec![(k.to_owned(), word(v.trim())?)]
            } else {
                w.iter()
                    .map(|p| {
                        let (k, v) = p.split_once('=').unwrap_or((p, ""));
                        (k.to_owned(), v.to_owned())
                    })
                    .collect()
            };
            if ins.keyword == "env" {
                for (k, v) in &pairs {
                    env_set(env, k, v);
                }
            }
            let shown: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect();
            format!("{kw} {}", shown.join(" "))
        }
        "workdir" | "user" | "stopsignal" => format!("{kw} {}", word(&ins.text)?),
        "expose" | "volume" => {
            let w: Vec<String> = words()?.iter().map(|w| quote(w)).collect();
            format!("{kw} {}", w.join(" "))
        }
        "copy" | "add" => {
            let mut w: Vec<String> = words()?.iter().map(|w| quote(w)).collect();
            for h in &ins.heredocs {
                if !h.quoted {
                    // The body follows as a file; shown by name only.
                    let _ = word(&h.content)?;
                }
            }
            if w.is_empty() {
                w.push(String::new());
            }
            format!("{kw} {}{}", flags(&["chown", "chmod"])?, w.join(" "))
        }
        "run" => {
            let mounts = flags(&["mount"])?;
            let body = match &ins.args {
                Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                Args::Shell(s) => s.clone(),
            };
            format!("{kw} {mounts}{body}")
        }
        _ => {
            let f = flags(&[])?;
            let body = match &ins.args {
                Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
                Args::Shell(s) => s.clone(),
            };
            format!("{kw} {f}{body}")
        }
    };
    Ok(line.trim_end().to_owned())
}

#[cfg(test)]
mod env_tests {
    use super::*;

    /// `ENV PATH=...` again keeps PATH where it was (BuildKit's addEnv).
    #[test]
    fn env_set_keeps_a_reassigned_variable_in_place() {
        let mut env = vec!["A=1".to_owned(), "PATH=/bin".to_owned(), "B=2".to_owned()];
        env_set(&mut env, "PATH", "/x:/bin");
        env_set(&mut env, "C", "3");
        env_set(&mut env, "A", "4");
        assert_eq!(env, ["A=4", "PATH=/x:/bin", "B=2", "C=3"]);
        assert_eq!(env_get(&env, "PATH").as_deref(), Some("/x:/bin"));
    }
}
