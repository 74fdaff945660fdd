//! The two shapes a check's results take: buildx's text (`docker build
//! --check`) and buildx's JSON (`--call check,format=json`, the frontend's
//! `result.json`), so scripts written against buildx read strata's.

use std::fmt::Write as _;

use base64::Engine as _;
use serde_json::{Value, json};

use super::findings::LintReport;

/// buildx's text: a count line, then each warning (by line) with the rule's
/// URL, its message and the lines around it. Hints follow as `NOTE:`
/// blocks. The error, if any, is not included: it is [`render_error`]'s.
pub fn render_text(report: &LintReport) -> String {
    let mut out = String::new();
    let n = report.warnings.len();
    match n {
        0 if report.error.is_none() && report.strata_error.is_none() => {
            out.push_str("Check complete, no warnings found.\n")
        }
        0 => {}
        1 => out.push_str("Check complete, 1 warning has been found!\n"),
        n => {
            let _ = writeln!(out, "Check complete, {n} warnings have been found!");
        }
    }
    let mut sorted: Vec<_> = report.warnings.iter().collect();
    sorted.sort_by_key(|w| w.line());
    for w in sorted {
        let _ = write!(out, "\nWARNING: {}", w.rule.name);
        if !w.rule.url.is_empty() {
            let _ = write!(out, " - {}", w.rule.url);
        }
        let _ = writeln!(out, "\n{}", w.detail);
        out.push_str(&excerpt(&report.file, &report.source, &w.ranges));
    }
    for h in &report.hints {
        let _ = writeln!(out, "\nNOTE: {} (line {})", h.message, h.line);
    }
    out
}

/// The error as buildx prints a check's build error: the message, then the
/// lines it points at (none for a whole-file error such as `error=true`).
pub fn render_error(report: &LintReport) -> Option<String> {
    let e = report.error.as_ref().or(report.strata_error.as_ref())?;
    let mut out = format!("{}\n", e.message);
    out.push_str(&excerpt(&report.file, &report.source, &e.ranges));
    Some(out)
}

/// BuildKit's `errdefs.Source.Print`: the marked lines with two lines of
/// context each side (four for a single line, spread as room allows).
fn excerpt(file: &str, source: &str, ranges: &[(usize, usize)]) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    let (Some(mut start), Some(mut end)) = (
        ranges.iter().map(|r| r.0).min(),
        ranges.iter().map(|r| r.1.max(r.0)).max(),
    ) else {
        return String::new();
    };
    if start > lines.len() || start < 1 {
        return String::new();
    }
    end = end.min(lines.len());
    let pad = if end == start { 4 } else { 2 };
    let first = start;
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{first}\n--------------------\n");
    for i in start..=end {
        let marked = ranges.iter().any(|r| r.0 <= i && r.1.max(r.0) >= i);
        let prefix = if marked { ">>>" } else { "   " };
        let _ = writeln!(out, " {i:>3} | {prefix} {}", lines[i - 1]);
    }
    out.push_str("--------------------\n");
    out
}

fn location(ranges: &[(usize, usize)]) -> Value {
    let position = |line: usize| {
        if line == 0 {
            json!({})
        } else {
            json!({ "line": line })
        }
    };
    if ranges.is_empty() {
        return json!({});
    }
    json!({
        "ranges": ranges
            .iter()
            .map(|&(s, e)| json!({ "start": position(s), "end": position(e) }))
            .collect::<Vec<_>>()
    })
}

/// The frontend's `result.json` as buildx prints it for
/// `--call check,format=json`: `warnings`, `sources` (the Dockerfile,
/// base64) and `buildError`, plus strata's `hints` and `strataError`
/// (what strata refuses where the reference goes on).
pub fn render_json(report: &LintReport) -> Value {
    let warnings: Vec<Value> = report
        .warnings
        .iter()
        .map(|w| {
            let mut v = json!({
                "ruleName": w.rule.name,
                "description": w.rule.description,
                "detail": w.detail,
                "location": location(&w.ranges),
            });
            if !w.rule.url.is_empty() {
                v["url"] = json!(w.rule.url);
            }
            v
        })
        .collect();
    let mut out = json!({
        "warnings": warnings,
        "sources": [{
            "filename": report.file,
            "data": base64::engine::general_purpose::STANDARD.encode(report.source.as_bytes()),
            "language": "Dockerfile",
        }],
    });
    if let Some(e) = &report.error {
        out["buildError"] = json!({ "message": e.message, "location": location(&e.ranges) });
    }
    if let Some(e) = &report.strata_error {
        out["strataError"] = json!({ "message": e.message, "location": location(&e.ranges) });
    }
    if !report.hints.is_empty() {
        out["hints"] = report
            .hints
            .iter()
            .map(|h| json!({ "line": h.line, "message": h.message }))
            .collect();
    }
    out
}
