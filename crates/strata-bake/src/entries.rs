//! The CSV-shaped values of a target (`cache-from`, `cache-to`, `output`,
//! `attest`, `secret`, `ssh`), parsed as buildx's `util/buildflags` parses
//! them, and kept in the shape `--print` shows.

use std::collections::BTreeMap;

use crate::error::{Result, invalid};

/// A cache or output entry: its attributes with `type` (and an output's
/// `dest`) among them, as buildx prints it (a JSON object, keys sorted).
pub type Entry = BTreeMap<String, String>;

/// Splits one CSV record as Go's encoding/csv does (what buildx's
/// csvvalue uses): commas separate fields, a field starting with `"` is
/// quoted and `""` inside it is a quote.
pub fn csv_fields(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(invalid(format!("{s:?}: unterminated quote"))),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(out);
                }
                Some(',') => {}
                Some(c) => {
                    return Err(invalid(format!(
                        "{s:?}: unexpected {c:?} after a quoted field"
                    )));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(out);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        out.push(field);
    }
}

/// `cache-from`/`cache-to` text: a bare reference list (`ref1,ref2`: one
/// registry entry each) or `type=...,key=value`.
pub fn parse_cache(s: &str) -> Result<Vec<Entry>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let fields = csv_fields(s)?;
    if !s.contains('=') {
        return Ok(fields
            .into_iter()
            .map(|r| Entry::from([("type".into(), "registry".into()), ("ref".into(), r)]))
            .collect());
    }
    let mut e = Entry::new();
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| invalid(format!("cache entry {s:?}: invalid value {f}")))?;
        e.insert(k.to_lowercase(), v.to_owned());
    }
    if e.get("type").is_none_or(String::is_empty) {
        return Err(invalid(format!("type required for {s:?}")));
    }
    Ok(vec![e])
}

/// `output` text: `type=...,dest=...`, a bare path (a local export), or
/// `-` (a tar on stdout).
pub fn parse_output(s: &str) -> Result<Entry> {
    let fields = csv_fields(s)?;
    if fields.len() == 1 && fields[0] == s && !s.starts_with("type=") {
        let ty = if s == "-" { "tar" } else { "local" };
        return Ok(Entry::from([
            ("type".into(), ty.into()),
            ("dest".into(), s.into()),
        ]));
    }
    let mut e = Entry::new();
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| invalid(format!("output {s:?}: invalid value {f}")))?;
        e.insert(k.trim().to_lowercase(), v.to_owned());
    }
    if e.get("type").is_none_or(String::is_empty) {
        return Err(invalid(format!("output {s:?}: type is required")));
    }
    Ok(e)
}

/// `attest` text: `type=sbom[,disabled=true][,key=value]`. `disabled` is
/// kept as the text `true`/`false` and printed as a JSON boolean.
pub fn parse_attest(s: &str) -> Result<Entry> {
    let mut e = Entry::new();
    for f in csv_fields(s)? {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| invalid(format!("attest {s:?}: invalid value {f}")))?;
        match k.trim().to_lowercase().as_str() {
            "type" => {
                e.insert("type".into(), v.into());
            }
            "disabled" => {
                let b = parse_bool(v)
                    .ok_or_else(|| invalid(format!("attest {s:?}: invalid value {f}")))?;
                e.insert("disabled".into(), b.to_string());
            }
            _ => {
                e.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    if e.get("type").is_none_or(String::is_empty) {
        return Err(invalid(format!(
            "attest {s:?}: attestation type not specified"
        )));
    }
    Ok(e)
}

/// Go's strconv.ParseBool.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A `secret` entry: `id=ID,src=FILE` or `id=ID,env=VAR`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Secret {
    pub id: String,
    pub src: String,
    pub env: String,
}

pub fn parse_secret(s: &str) -> Result<Secret> {
    let mut out = Secret::default();
    let mut ty = String::new();
    for f in csv_fields(s)? {
        let (k, v) = f.split_once('=').ok_or_else(|| {
            invalid(format!(
                "secret {s:?}: invalid field '{f}' must be a key=value pair"
            ))
        })?;
        match k.to_lowercase().as_str() {
            "type" if v == "file" || v == "env" => ty = v.to_owned(),
            "type" => return Err(invalid(format!("unsupported secret type {v:?}"))),
            "id" => out.id = v.to_owned(),
            "source" | "src" => out.src = v.to_owned(),
            "env" => out.env = v.to_owned(),
            k => return Err(invalid(format!("unexpected key '{k}' in '{f}'"))),
        }
    }
    if ty == "env" && out.env.is_empty() {
        out.env = std::mem::take(&mut out.src);
    }
    Ok(out)
}

/// An `ssh` entry: `ID[=PATH[,PATH...]]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ssh {
    pub id: String,
    pub paths: Vec<String>,
}

pub fn parse_ssh(s: &str) -> Ssh {
    let (id, paths) = match s.split_once('=') {
        Some((id, p)) => (id, p.split(',').map(str::to_owned).collect()),
        None => (s, Vec::new()),
    };
    Ssh {
        id: id.to_owned(),
        paths,
    }
}

/// Drops later duplicates, keeping the first of each (buildx's
/// `removeDupes`).
pub fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Attestations are unique by type: a later one replaces the earlier in
/// its place (buildx's `removeAttestDupes`).
pub fn dedup_attests(v: Vec<Entry>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::with_capacity(v.len());
    for a in v {
        match out.iter_mut().find(|o| o.get("type") == a.get("type")) {
            Some(slot) => *slot = a,
            None => out.push(a),
        }
    }
    out
}

/// Secrets are unique by id: a later one replaces the earlier in its
/// place (buildx's `removeSecretDupes`).
pub fn dedup_secrets(v: Vec<Secret>) -> Vec<Secret> {
    let mut out: Vec<Secret> = Vec::with_capacity(v.len());
    for s in v {
        match out.iter_mut().find(|o| o.id == s.id) {
            Some(slot) => *slot = s,
            None => out.push(s),
        }
    }
    out
}

/// SSH keys are unique by id, later wins in place (buildx's
/// `removeSSHDupes`).
pub fn dedup_ssh(v: Vec<Ssh>) -> Vec<Ssh> {
    let mut out: Vec<Ssh> = Vec::with_capacity(v.len());
    for s in v {
        match out.iter_mut().find(|o| o.id == s.id) {
            Some(slot) => *slot = s,
            None => out.push(s),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_commas() {
        assert_eq!(
            csv_fields(r#"type=local,"dest=a,b",x="#).unwrap_or_default(),
            vec!["type=local", "dest=a,b", "x="]
        );
        assert!(csv_fields(r#""open"#).is_err());
    }

    #[test]
    fn cache_bare_refs_are_registry_entries() {
        let e = parse_cache("a/b,c/d").unwrap_or_default();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1]["ref"], "c/d");
        assert_eq!(e[1]["type"], "registry");
        assert!(parse_cache("mode=max").is_err());
    }

    #[test]
    fn output_shorthands() {
        assert_eq!(
            parse_output("out").ok().map(|e| e["type"].clone()),
            Some("local".into())
        );
        assert_eq!(
            parse_output("-").ok().map(|e| e["type"].clone()),
            Some("tar".into())
        );
    }

    #[test]
    fn secret_env_type_moves_src() {
        let s = parse_secret("type=env,id=a,src=VAR").unwrap_or_default();
        assert_eq!((s.env.as_str(), s.src.as_str()), ("VAR", ""));
    }
}
