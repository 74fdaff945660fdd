//! What the checks are asked and what they find: options, warnings, the
//! error that stops a build, hints; and the sink rules report into. A leaf:
//! the passes (`dispatch`) and the renderers (`report`) both use it.

use super::config::CheckConfig;
use super::rules::Rule;
use crate::parse::{Dockerfile, Instruction};
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

/// Collects warnings of the enabled rules.
pub(crate) struct Sink<'a> {
    pub(super) config: &'a CheckConfig,
    pub(super) warnings: Vec<Warning>,
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

/// An instruction's lines, as a warning's range.
pub(super) fn range(ins: &Instruction) -> Vec<(usize, usize)> {
    vec![(ins.line, ins.end_line.max(ins.line))]
}

/// `range` with heredoc bodies included, as the reference's node location.
pub(super) fn range_in(df: &Dockerfile, ins: &Instruction) -> Vec<(usize, usize)> {
    let last = df
        .instructions
        .iter()
        .position(|i| i.line == ins.line)
        .and_then(|k| df.trivia(k))
        .map_or(ins.end_line, |t| t.last_line);
    vec![(ins.line, last.max(ins.line))]
}
