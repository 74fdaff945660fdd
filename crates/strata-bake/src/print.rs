//! `--print`: the resolved definition as buildx writes it
//! (`json.MarshalIndent(def, "", "  ")`): struct keys in field order,
//! map keys sorted, empty values omitted, `<`, `>` and `&` escaped as Go
//! does, and `${`/`%{` in args, labels, annotations, extra hosts and
//! inline Dockerfiles escaped back to `$${`/`%%{` (buildx's
//! `Target.MarshalJSON`) so that the output reads back as the same file.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Group, NullableMap, Target};

/// A JSON value whose objects keep the order they were built in.
enum J {
    Null,
    Bool(bool),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn esc(s: &str) -> String {
    s.replace("${", "$${").replace("%{", "%%{")
}

fn strs(v: &[String], f: impl Fn(&str) -> String) -> J {
    J::Arr(v.iter().map(|s| J::Str(f(s))).collect())
}

fn nullable(m: &NullableMap) -> J {
    J::Obj(
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map_or(J::Null, |s| J::Str(esc(s)))))
            .collect(),
    )
}

fn entry(e: &BTreeMap<String, String>) -> J {
    J::Obj(
        e.iter()
            .map(|(k, v)| {
                let val = if k == "disabled" {
                    J::Bool(v == "true")
                } else {
                    J::Str(v.clone())
                };
                (k.clone(), val)
            })
            .collect(),
    )
}

fn target_json(t: &Target) -> J {
    let mut o: Vec<(String, J)> = Vec::new();
    let mut put = |k: &str, v: J| o.push((k.to_owned(), v));
    if let Some(d) = t.description.as_deref().filter(|d| !d.is_empty()) {
        put("description", J::Str(d.to_owned()));
    }
    if !t.inherits.is_empty() {
        put("inherits", strs(&t.inherits, str::to_owned));
    }
    if let Some(a) = t.annotations.as_deref().filter(|a| !a.is_empty()) {
        put("annotations", strs(a, esc));
    }
    if let Some(a) = t.attest.as_deref().filter(|a| !a.is_empty()) {
        // An attestation that is not disabled prints no `disabled` key.
        put(
            "attest",
            J::Arr(
                a.iter()
                    .map(|e| {
                        let mut e = e.clone();
                        if e.get("disabled").is_some_and(|d| d != "true") {
                            e.remove("disabled");
                        }
                        entry(&e)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(c) = &t.context {
        put("context", J::Str(c.clone()));
    }
    if let Some(c) = t.contexts.as_ref().filter(|c| !c.is_empty()) {
        put(
            "contexts",
            J::Obj(
                c.iter()
                    .map(|(k, v)| (k.clone(), J::Str(v.clone())))
                    .collect(),
            ),
        );
    }
    if let Some(d) = &t.dockerfile {
        put("dockerfile", J::Str(d.clone()));
    }
    if let Some(d) = &t.dockerfile_inline {
        put("dockerfile-inline", J::Str(esc(d)));
    }
    if let Some(m) = t.args.as_ref().filter(|m| !m.is_empty()) {
        put("args", nullable(m));
    }
    if let Some(m) = t.labels.as_ref().filter(|m| !m.is_empty()) {
        put("labels", nullable(m));
    }
    if let Some(v) = t.tags.as_deref().filter(|v| !v.is_empty()) {
        put("tags", strs(v, str::to_owned));
    }
    for (key, list) in [("cache-from", &t.cache_from), ("cache-to", &t.cache_to)] {
        if let Some(v) = list.as_deref().filter(|v| !v.is_empty()) {
            put(key, J::Arr(v.iter().map(entry).collect()));
        }
    }
    if let Some(s) = &t.target {
        put("target", J::Str(s.clone()));
    }
    if let Some(v) = t.secrets.as_deref().filter(|v| !v.is_empty()) {
        put(
            "secret",
            J::Arr(
                v.iter()
                    .map(|s| {
                        let mut o = Vec::new();
                        for (k, v) in [("id", &s.id), ("src", &s.src), ("env", &s.env)] {
                            if !v.is_empty() {
                                o.push((k.to_owned(), J::Str(v.clone())));
                            }
                        }
                        J::Obj(o)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(v) = t.ssh.as_deref().filter(|v| !v.is_empty()) {
        put(
            "ssh",
            J::Arr(
                v.iter()
                    .map(|s| {
                        let mut o = Vec::new();
                        if !s.id.is_empty() {
                            o.push(("id".to_owned(), J::Str(s.id.clone())));
                        }
                        if !s.paths.is_empty() {
                            o.push(("paths".to_owned(), strs(&s.paths, str::to_owned)));
                        }
                        J::Obj(o)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(v) = t.platforms.as_deref().filter(|v| !v.is_empty()) {
        put("platforms", strs(v, str::to_owned));
    }
    if let Some(v) = t.outputs.as_deref().filter(|v| !v.is_empty()) {
        put("output", J::Arr(v.iter().map(entry).collect()));
    }
    if let Some(b) = t.pull {
        put("pull", J::Bool(b));
    }
    if let Some(b) = t.no_cache {
        put("no-cache", J::Bool(b));
    }
    if let Some(s) = &t.network {
        put("network", J::Str(s.clone()));
    }
    if let Some(v) = t.no_cache_filter.as_deref().filter(|v| !v.is_empty()) {
        put("no-cache-filter", strs(v, str::to_owned));
    }
    if let Some(s) = &t.shm_size {
        put("shm-size", J::Str(s.clone()));
    }
    if let Some(v) = t.ulimits.as_deref().filter(|v| !v.is_empty()) {
        put("ulimits", strs(v, str::to_owned));
    }
    if let Some(s) = &t.call {
        put("call", J::Str(s.clone()));
    }
    if let Some(v) = t.entitlements.as_deref().filter(|v| !v.is_empty()) {
        put("entitlements", strs(v, str::to_owned));
    }
    if let Some(m) = t.extra_hosts.as_ref().filter(|m| !m.is_empty()) {
        put("extra-hosts", nullable(m));
    }
    J::Obj(o)
}

fn group_json(g: &Group) -> J {
    let mut o = Vec::new();
    if let Some(d) = g.description.as_deref().filter(|d| !d.is_empty()) {
        o.push(("description".to_owned(), J::Str(d.to_owned())));
    }
    o.push(("targets".to_owned(), strs(&g.targets, str::to_owned)));
    J::Obj(o)
}

/// Go's encoding/json string escaping (HTML-safe, as `json.Marshal`).
fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write(out: &mut String, v: &J, depth: usize) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        for _ in 0..d {
            out.push_str("  ");
        }
    };
    match v {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Str(s) => write_str(out, s),
        J::Arr(a) if a.is_empty() => out.push_str("[]"),
        J::Obj(o) if o.is_empty() => out.push_str("{}"),
        J::Arr(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write(out, x, depth + 1);
            }
            pad(out, depth);
            out.push(']');
        }
        J::Obj(o) => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                write_str(out, k);
                out.push_str(": ");
                write(out, x, depth + 1);
            }
            pad(out, depth);
            out.push('}');
        }
    }
}

/// The `--print` document, with a trailing newline (buildx's Fprintln).
/// `group` is left out when there is none (`omitempty`), `target` never.
pub fn print_definition(
    groups: &BTreeMap<String, Group>,
    targets: &BTreeMap<String, Target>,
) -> String {
    let mut top = Vec::new();
    if !groups.is_empty() {
        top.push((
            "group".to_owned(),
            J::Obj(
                groups
                    .iter()
                    .map(|(k, g)| (k.clone(), group_json(g)))
                    .collect(),
            ),
        ));
    }
    top.push((
        "target".to_owned(),
        J::Obj(
            targets
                .iter()
                .map(|(k, t)| (k.clone(), target_json(t)))
                .collect(),
        ),
    ));
    let mut out = String::new();
    write(&mut out, &J::Obj(top), 0);
    out.push('\n');
    out
}
