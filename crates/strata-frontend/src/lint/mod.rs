//! Build checks: BuildKit 0.25's Dockerfile lint rules, evaluated the way
//! its frontend does (moby/buildkit `frontend/dockerfile/dockerfile2llb`
//! `toDispatchState`, `instructions.Parse` and the parser's warnings), so
//! `strata build --check` fires the same rules on the same lines as
//! `docker buildx build --check`.
//!
//! Three passes, as there: parse-time rules over every instruction (casing,
//! MAINTAINER, definition comments, empty continuation lines), rules over
//! the stage list (names, FROM arguments and platforms), then a dry
//! dispatch of each stage that tracks the environment a step would see, for
//! the rules that need it (undefined variables, relative WORKDIR, shell
//! form CMD, ...). Nothing is run or pulled; base images' ENV comes from
//! the caller ([`LintOptions::base_env`]).

mod config;
mod dispatch;
mod report;
pub mod rules;

pub use config::CheckConfig;
pub use report::{render_error, render_json, render_text};
pub use rules::Rule;

use crate::parse::{Dockerfile, parse};
use crate::plan::BaseEnv;
use crate::{BuildInputs, Ignore};

/// One rule firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub rule: &'static Rule,
    /// The rule's message for this case (buildx's `detail`).
    pub detail: String,
    /// 1-based, inclusive (first line, last line) ranges.
    pub ranges: Vec<(usize, usize)>,
}

impl Warning {
    /// The first line the warning points at (0 when none).
    pub fn line(&self) -> usize {
        self.ranges.first().map_or(0, |r| r.0)
    }

    /// `Rule: detail (line N)`: the line a normal build prints at its end
    /// (the reference's `linter.LintFormatShort`).
    pub fn short(&self) -> String {
        match self.line() {
            0 => format!("{}: {}", self.rule.name, self.detail),
            n => format!("{}: {} (line {n})", self.rule.name, self.detail),
        }
    }
}

/// Why the check (or the build it stands for) cannot go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub message: String,
    /// Empty when the error is about the whole file (`error=true`).
    pub ranges: Vec<(usize, usize)>,
    /// The checks' own failure (an invalid check option, or warnings with
    /// `error=true`), which fails a normal build too; otherwise an error
    /// the build itself raises in its own words.
    pub from_checks: bool,
}

/// A note beyond the reference's rules: something a check can tell that
/// BuildKit only discovers when it fails (a `COPY --from` that names no
/// stage but nearly does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub line: usize,
    pub message: String,
}

/// Everything a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintReport {
    pub file: String,
    /// The Dockerfile's text, for source excerpts.
    pub source: String,
    /// In the order the rules fired.
    pub warnings: Vec<Warning>,
    pub hints: Vec<Hint>,
    /// Where the reference's check would stop with an error.
    pub error: Option<CheckError>,
    /// What strata's own frontend refuses where the reference goes on
    /// (duplicate stage names, a deliberate deviation; see
    /// docs/decisions.md), so a clean check means strata will build it.
    pub strata_error: Option<CheckError>,
}

impl LintReport {
    /// buildx's `--check` exit status: 1 when anything was found (its
    /// `result.statuscode`), else 0.
    pub fn status(&self) -> u8 {
        u8::from(!self.warnings.is_empty() || self.error.is_some() || self.strata_error.is_some())
    }
}

/// Which stages the dry dispatch visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `--check`: every stage, or those the target needs when one is given
    /// (the reference's lint subrequest sets `AllStages` without a target).
    Check,
    /// A normal build: the stages the target (default: the last) needs.
    Build,
}

/// What the check is given besides the Dockerfile.
pub struct LintOptions<'a> {
    /// Build args (`BUILDKIT_DOCKERFILE_CHECK` among them) and platforms.
    pub inputs: &'a BuildInputs,
    pub target: Option<&'a str>,
    pub scope: Scope,
    /// A base image's ENV (`KEY=VALUE` items) when known; an unknown one is
    /// taken to set only PATH.
    pub base_env: BaseEnv<'a>,
    /// A base image's platform when known (InvalidBaseImagePlatform).
    pub base_platform: &'a dyn Fn(&str) -> Option<crate::Platform>,
    /// The context's `.dockerignore`, for CopyIgnoredFile.
    pub ignore: Option<&'a Ignore>,
}

/// Runs every enabled rule over `source` (the contents of `file`).
pub fn lint(source: &str, file: &str, opts: &LintOptions) -> LintReport {
    let mut report = LintReport {
        file: file.to_owned(),
        source: source.to_owned(),
        warnings: Vec::new(),
        hints: Vec::new(),
        error: None,
        strata_error: None,
    };
    let df = match parse(source, file) {
        Ok(df) => df,
        Err(d) => {
            report.error = Some(CheckError {
                message: d.message,
                ranges: vec![(d.line, d.line)],
                from_checks: false,
            });
            return report;
        }
    };
    let config = match check_config(&df, opts.inputs) {
        Ok(c) => c,
        Err(message) => {
            report.error = Some(CheckError {
                message,
                ranges: Vec::new(),
                from_checks: true,
            });
            return report;
        }
    };
    let mut sink = Sink {
        config: &config,
        warnings: Vec::new(),
    };
    let outcome = dispatch::run(&df, opts, &mut sink, &mut report.hints);
    report.warnings = sink.warnings;
    if let Err(e) = outcome {
        report.error = Some(e);
        return report;
    }
    if config.error && !report.warnings.is_empty() {
        let mut names: Vec<&str> = report.warnings.iter().map(|w| w.rule.name).collect();
        names.sort_unstable();
        names.dedup();
        report.error = Some(CheckError {
            message: format!("lint violation found for rules: {}", names.join(", ")),
            ranges: Vec::new(),
            from_checks: true,
        });
        return report;
    }
    // What a strata build of this file would refuse, so a clean check
    // means the frontend accepts the file.
    if let Err(d) = crate::stages(&df, opts.inputs)
        .and_then(|(_, stages)| crate::graph(&df, &stages, opts.target).map(|_| ()))
    {
        report.strata_error = Some(CheckError {
            message: d.message,
            ranges: vec![(d.line, d.line)],
            from_checks: false,
        });
    }
    report
}

/// The `BUILDKIT_DOCKERFILE_CHECK` build arg replaces the `# check=`
/// directive, as in the reference's dockerui config.
fn check_config(df: &Dockerfile, inputs: &BuildInputs) -> Result<CheckConfig, String> {
    if let Some(v) = inputs.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        return CheckConfig::parse(v)
            .map_err(|e| format!("failed to parse BUILDKIT_DOCKERFILE_CHECK: {e}"));
    }
    let directive = df
        .directives
        .iter()
        .find(|(k, _)| k == "check")
        .map_or("", |(_, v)| v.as_str());
    CheckConfig::parse(directive).map_err(|e| format!("failed to parse check options: {e}"))
}

/// Collects warnings of the enabled rules.
pub(crate) struct Sink<'a> {
    config: &'a CheckConfig,
    warnings: Vec<Warning>,
}

impl Sink<'_> {
    pub(crate) fn warn(
        &mut self,
        rule: &'static Rule,
        detail: String,
        ranges: Vec<(usize, usize)>,
    ) {
        if self.config.enabled(rule) {
            self.warnings.push(Warning {
                rule,
                detail,
                ranges,
            });
        }
    }
}

/// The reference's `suggest.Search`: the closest option at edit distance
/// under 3 (first one wins a tie), none when `value` is itself an option.
pub(crate) fn suggest<'o>(
    value: &str,
    options: impl IntoIterator<Item = &'o str>,
    case_sensitive: bool,
) -> Option<String> {
    let fold = |s: &str| {
        if case_sensitive {
            s.to_owned()
        } else {
            s.to_lowercase()
        }
    };
    let v = fold(value);
    let mut best: Option<(usize, String)> = None;
    for opt in options {
        let o = fold(opt);
        if o == v {
            return None;
        }
        let d = strsim::levenshtein(&v, &o);
        if d < best.as_ref().map_or(3, |b| b.0) {
            let shown = if case_sensitive {
                o
            } else if value == value.to_lowercase() {
                o.to_lowercase()
            } else if value == value.to_uppercase() {
                o.to_uppercase()
            } else {
                o
            };
            best = Some((d, shown));
        }
    }
    best.map(|b| b.1)
}

#[cfg(test)]
mod tests;
