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
mod env;
mod findings;
mod report;
pub mod rules;
mod stage;

pub use config::CheckConfig;
use findings::Sink;
pub use findings::{CheckError, Hint, LintOptions, LintReport, Scope, Warning};
pub use report::{render_error, render_json, render_text};
pub use rules::Rule;

use crate::BuildInputs;
use crate::parse::{Dockerfile, parse};

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
            report.warnings = warnings_before(source, file, d.line, opts);
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

/// The parse-time warnings of the instructions before line `failed`, the
/// first that does not parse: the reference's instruction parser lints as it
/// goes, so those warnings come out beside the error.
fn warnings_before(source: &str, file: &str, failed: usize, opts: &LintOptions) -> Vec<Warning> {
    let before = source
        .split('\n')
        .take(failed.saturating_sub(1))
        .collect::<Vec<_>>()
        .join("\n");
    let Ok(df) = parse(&before, file) else {
        return Vec::new();
    };
    let Ok(config) = check_config(&df, opts.inputs) else {
        return Vec::new();
    };
    let mut sink = Sink {
        config: &config,
        warnings: Vec::new(),
    };
    dispatch::parse_time(&df, &mut sink);
    sink.warnings
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

#[cfg(test)]
mod tests;
