//! `strata build --check` / `--call check`: the build checks run on their
//! own, printed as buildx prints them.

use std::io::Write;
use std::process::ExitCode;

use strata_build::BuildOptions;

use crate::exit::UsageError;

/// The flags that ask for a check instead of a build.
pub(super) struct CheckFlags<'a> {
    pub(super) check: bool,
    pub(super) call: Option<&'a str>,
    pub(super) format: Option<&'a str>,
    /// `--progress rawjson` asks for JSON results.
    pub(super) rawjson: bool,
    pub(super) print: bool,
}

/// `--check` / `--call=check[,format=json][,ignorestatus=BOOL]`.
pub(super) struct CheckCall {
    json: bool,
    ignore_status: bool,
}

/// The check requested, if any; `--call build` (or none) builds. buildx's
/// other functions (outline, targets) are refused, as strata has `--print`.
pub(super) fn check_call(flags: &CheckFlags) -> anyhow::Result<Option<CheckCall>> {
    let mut call = if flags.check {
        Some(CheckCall {
            json: false,
            ignore_status: false,
        })
    } else {
        None
    };
    if let Some(spec) = flags.call {
        let mut name = None;
        let mut json = false;
        let mut ignore_status = false;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "text")) => json = false,
                Some(("ignorestatus", v)) => {
                    ignore_status = matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True");
                    if !ignore_status && !matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False")
                    {
                        return Err(UsageError(format!(
                            "--call {spec:?}: invalid ignorestatus value {v:?}"
                        ))
                        .into());
                    }
                }
                Some(_) => {
                    return Err(
                        UsageError(format!("--call {spec:?}: invalid field {field:?}")).into(),
                    );
                }
                None if name.is_none() => name = Some(field),
                None => {
                    return Err(UsageError(format!("--call {spec:?}: one function only")).into());
                }
            }
        }
        match name.unwrap_or("build") {
            "build" if flags.check => {
                return Err(
                    UsageError("--check and --call build contradict each other".into()).into(),
                );
            }
            "build" => {}
            "check" | "lint" => {
                call = Some(CheckCall {
                    json,
                    ignore_status,
                })
            }
            other => {
                return Err(UsageError(format!(
                    "--call {other}: strata supports build and check (for the plan of a build, use --print)"
                ))
                .into());
            }
        }
    }
    match (&mut call, flags.format) {
        (_, None) => {}
        (Some(c), Some("json")) => c.json = true,
        (Some(c), Some("text")) => c.json = false,
        (Some(_), Some(f)) => {
            return Err(UsageError(format!("--format {f}: expected text or json")).into());
        }
        (None, Some(_)) => {
            return Err(UsageError("--format applies to --check only".into()).into());
        }
    }
    if let Some(c) = &mut call {
        if flags.rawjson {
            c.json = true;
        }
        if flags.print {
            return Err(UsageError("--print and --check cannot be combined".into()).into());
        }
    }
    Ok(call)
}

/// Prints the check's results on stdout (buildx's text, or its JSON) and
/// the error, if the check stopped on one, on stderr. Exit 1 when anything
/// was found, as buildx (its `result.statuscode`), unless `ignorestatus`.
pub(super) fn run_check(
    store: &strata_store::Store,
    opts: &BuildOptions,
    call: &CheckCall,
    shown_name: &str,
) -> anyhow::Result<ExitCode> {
    use strata_frontend::lint;
    let mut report = strata_build::check(store, opts)?;
    shown_name.clone_into(&mut report.file);
    let mut out = std::io::stdout().lock();
    if call.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&lint::render_json(&report))?
        )?;
    } else {
        out.write_all(lint::render_text(&report).as_bytes())?;
    }
    out.flush()?;
    if let Some(e) = lint::render_error(&report) {
        #[expect(clippy::print_stderr, reason = "the CLI renders check errors")]
        {
            if !call.json && !report.warnings.is_empty() {
                eprintln!();
            }
            eprint!("ERROR: {e}");
        }
        return Ok(ExitCode::from(crate::exit::EXIT_FAILURE));
    }
    if call.ignore_status {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(report.status()))
}

/// Go's `filepath.Clean` for the names buildx shows: `.` segments and
/// doubled slashes removed, `..` applied where it can be.
pub(super) fn clean_path(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}
