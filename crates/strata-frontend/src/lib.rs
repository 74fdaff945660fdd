//! The Dockerfile frontend: turns a Dockerfile into instructions grouped by
//! stage, with the word expansion the solver applies at dispatch time.
//!
//! Owns: parser directives, the line/continuation/heredoc grammar, instruction
//! flags, JSON (exec) versus shell form, shell-word expansion, the stage
//! list and the build checks (`lint`: BuildKit's lint rules). It never touches the filesystem, never prints, and never panics on
//! any input: every problem is a [`Diagnostic`] with a line and column.

mod ast;
mod expand;
mod graph;
mod ignore;
pub mod lint;
mod parse;
mod plan;
mod scope;
mod suggest;

pub use ast::{Arg as AstArg, Node, dump, parse_ast};
pub use expand::{ExpandError, expand_word, expand_words, split_words};
pub use graph::{
    Edge, EdgeKind, Graph, Source, graph, mount_sources, reference_error, stage_label,
};
pub use ignore::Ignore;
pub use parse::{Args, Dockerfile, Heredoc, Instruction, Trivia, parse};
pub use plan::{BaseEnv, DEFAULT_PATH, NamedContexts, env_get, env_set, render_plan};
pub use scope::{
    BuildInputs, GlobalScope, PLATFORM_ARGS, PROXY_ARGS, Platform, StageScope, is_proxy_arg,
};

use std::fmt;

/// One error, located in the Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    pub message: String,
    /// The text of the offending line, shown under the message.
    pub source_line: String,
}

impl Diagnostic {
    /// `file:line:column: message`, then the line with a `^` under the column.
    pub fn render(&self) -> String {
        let gutter = self.line.to_string();
        let pad = " ".repeat(gutter.len());
        format!(
            "{}:{}:{}: {}\n{pad} |\n{gutter} | {}\n{pad} | {}^",
            self.file,
            self.line,
            self.column,
            self.message,
            self.source_line,
            " ".repeat(self.column.saturating_sub(1)),
        )
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Diagnostic {}

/// A stage: `FROM base [AS name]` and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// Lowercased, as stage names are case-insensitive.
    pub name: Option<String>,
    /// The base, expanded with the global scope by [`stages`].
    pub base: String,
    /// `FROM --platform=`, expanded with the global scope and parsed.
    pub platform: Option<Platform>,
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

/// Splits a parsed Dockerfile into its global scope (the predefined
/// platform ARGs and the ARGs before the first FROM, `--build-arg`s
/// applied) and its stages. FROM's base and `--platform` are expanded with
/// the global scope, as the reference does.
pub fn stages(
    df: &Dockerfile,
    inputs: &BuildInputs,
) -> Result<(GlobalScope, Vec<Stage>), Diagnostic> {
    let global = GlobalScope::new(df, inputs)?;
    let lookup = |k: &str| global.lookup(k);
    let mut stages: Vec<Stage> = Vec::new();
    for ins in &df.instructions {
        if ins.keyword == "from" {
            let words = ins.args.words();
            let (base, name) = match words.as_slice() {
                [b] => (b.clone(), None),
                [b, as_, n] if as_.eq_ignore_ascii_case("as") => {
                    (b.clone(), Some(n.to_lowercase()))
                }
                _ => {
                    return Err(df.error(
                        ins,
                        "FROM requires either one or three arguments: FROM <image> [AS <name>]",
                    ));
                }
            };
            let base = expand_word(&base, &lookup, df.escape)
                .map_err(|e| df.error(ins, &e.to_string()))?;
            if base.is_empty() {
                return Err(df.error(
                    ins,
                    &format!("base name ({}) should not be blank", words[0]),
                ));
            }
            if let Some(n) = &name {
                if !valid_stage_name(n) {
                    return Err(df.error(
                        ins,
                        &format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                    ));
                }
                if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                    return Err(df.error(ins, &format!("duplicate stage name {n:?}")));
                }
            }
            let platform = match ins.flag("platform") {
                None => None,
                Some(p) => {
                    let v = expand_word(p, &lookup, df.escape).map_err(|e| {
                        df.error(
                            ins,
                            &format!("failed to process arguments for platform {p}: {e}"),
                        )
                    })?;
                    if v.is_empty() {
                        return Err(
                            df.error(ins, &format!("empty platform value from expression {p}"))
                        );
                    }
                    let parsed: Platform =
                        v.parse()
                            .map_err(|e: strata_oci::platform::PlatformError| {
                                df.error(ins, &format!("failed to parse platform {p}: {e}"))
                            })?;
                    Some(parsed)
                }
            };
            stages.push(Stage {
                index: stages.len(),
                name,
                base,
                platform,
                from: ins.clone(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(ins.clone());
        } else if ins.keyword != "arg" {
            return Err(df.error(
                ins,
                &format!(
                    "{} instruction before the first FROM: only ARG may precede FROM",
                    ins.keyword.to_uppercase()
                ),
            ));
        }
    }
    if stages.is_empty() {
        return Err(Diagnostic {
            file: df.file.clone(),
            line: 1,
            column: 1,
            message: "the Dockerfile has no FROM instruction: a build needs at least one stage"
                .into(),
            source_line: String::new(),
        });
    }
    Ok((global, stages))
}

/// The reference's stage-name rule: `^[a-z][a-z0-9-_.]*$` (names are
/// lowercased first, as they are case-insensitive).
fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

/// The instructions strata knows, for "did you mean" suggestions.
pub const KEYWORDS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];
