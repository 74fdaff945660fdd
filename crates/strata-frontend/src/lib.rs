//! The Dockerfile frontend: turns a Dockerfile into instructions grouped by
//! stage, with the word expansion the solver applies at dispatch time.
//!
//! Owns: parser directives, the line/continuation/heredoc grammar, instruction
//! flags, JSON (exec) versus shell form, shell-word expansion and the stage
//! list. It never touches the filesystem, never prints, and never panics on
//! any input: every problem is a [`Diagnostic`] with a line and column.

mod ast;
mod expand;
mod parse;

pub use ast::{Arg as AstArg, Node, dump, parse_ast};
pub use expand::{ExpandError, expand_word, split_words};
pub use parse::{Args, Dockerfile, Heredoc, Instruction, parse};

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
    /// The base as written (expanded with the global ARGs by [`stages`]).
    pub base: String,
    pub platform: Option<String>,
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

/// `os/arch[/variant]` of the build machine and of the image being built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platforms {
    pub build: (String, String, String),
    pub target: (String, String, String),
}

impl Platforms {
    /// Build and target both the host: `linux/<arch>`, no variant (as
    /// BuildKit reports an amd64 or arm64 host).
    pub fn host(arch: &str) -> Self {
        let p = ("linux".to_owned(), arch.to_owned(), String::new());
        Self {
            build: p.clone(),
            target: p,
        }
    }

    /// The predefined ARGs, as BuildKit defines them: in the global scope
    /// (usable in FROM without a declaration), and inside a stage only once
    /// that stage declares them with `ARG NAME`.
    pub fn args(&self) -> std::collections::BTreeMap<String, String> {
        let fmt = |(os, arch, var): &(String, String, String)| {
            if var.is_empty() {
                format!("{os}/{arch}")
            } else {
                format!("{os}/{arch}/{var}")
            }
        };
        let mut m = std::collections::BTreeMap::new();
        for (prefix, p) in [("BUILD", &self.build), ("TARGET", &self.target)] {
            m.insert(format!("{prefix}PLATFORM"), fmt(p));
            m.insert(format!("{prefix}OS"), p.0.clone());
            m.insert(format!("{prefix}ARCH"), p.1.clone());
            m.insert(format!("{prefix}VARIANT"), p.2.clone());
        }
        m
    }
}

/// The ARGs BuildKit passes to RUN from `--build-arg` without a declaration,
/// and never records in the image's history (`docker build` reference,
/// "Predefined ARGs").
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Splits a parsed Dockerfile into the global ARGs (before the first FROM)
/// and its stages. FROM's base is expanded with the global ARGs, overridden
/// by `build_args`, as the reference does. Without predefined platform ARGs;
/// see [`stages_for`].
pub fn stages(
    df: &Dockerfile,
    build_args: &std::collections::BTreeMap<String, String>,
) -> Result<(Vec<Instruction>, Vec<Stage>), Diagnostic> {
    stages_for(df, build_args, &std::collections::BTreeMap::new())
}

/// Like [`stages`], with the predefined ARGs (`BUILDPLATFORM`,
/// `TARGETARCH`, ...) given: they are in scope for FROM lines and for the
/// `--platform` flag of FROM.
pub fn stages_for(
    df: &Dockerfile,
    build_args: &std::collections::BTreeMap<String, String>,
    predefined: &std::collections::BTreeMap<String, String>,
) -> Result<(Vec<Instruction>, Vec<Stage>), Diagnostic> {
    let mut globals = Vec::new();
    let mut global_env: Vec<(String, String)> = predefined
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
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
            let lookup = |k: &str| {
                global_env
                    .iter()
                    .rev()
                    .find(|(n, _)| n == k)
                    .map(|(_, v)| v.clone())
            };
            let base = expand_word(&base, &lookup, df.escape)
                .map_err(|e| df.error(ins, &e.to_string()))?;
            if base.is_empty() {
                return Err(df.error(ins, "FROM: base name expands to an empty string"));
            }
            if let Some(n) = &name
                && stages.iter().any(|s| s.name.as_deref() == Some(n))
            {
                return Err(df.error(ins, &format!("duplicate stage name {n:?}")));
            }
            let platform = ins
                .flag("platform")
                .map(|p| expand_word(p, &lookup, df.escape))
                .transpose()
                .map_err(|e| df.error(ins, &e.to_string()))?;
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
        } else if ins.keyword == "arg" {
            for (k, v) in ins.arg_pairs() {
                let lookup = |n: &str| {
                    global_env
                        .iter()
                        .rev()
                        .find(|(m, _)| m == n)
                        .map(|(_, v)| v.clone())
                };
                let v = match build_args.get(&k) {
                    Some(o) => Some(o.clone()),
                    None => match v {
                        Some(d) => Some(
                            expand_word(&d, &lookup, df.escape)
                                .map_err(|e| df.error(ins, &e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                if let Some(v) = v {
                    global_env.push((k, v));
                }
            }
            globals.push(ins.clone());
        } else {
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
    Ok((globals, stages))
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
