//! Compose files: each service's `build:` section becomes a target, as
//! buildx's `bake/compose.go` maps it (with the `x-bake` extension), after
//! compose's `${VAR}` interpolation from the environment and `.env`.

use std::collections::BTreeMap;

use serde_json::Value as J;
use yaml_rust2::{Yaml, YamlLoader};

use crate::entries::{self, Entry};
use crate::error::{BakeError, Result, invalid};
use crate::model::{Config, Group, NullableMap, Target};

/// Whether a file that is not named `.hcl`/`.json` is a compose file:
/// buildx tries compose first for every other name.
pub fn looks_like_compose(text: &str) -> bool {
    match YamlLoader::load_from_str(text) {
        Ok(docs) => docs.first().is_some_and(
            |d| matches!(d, Yaml::Hash(h) if h.contains_key(&Yaml::String("services".into()))),
        ),
        Err(_) => false,
    }
}

fn to_json(y: &Yaml) -> J {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| J::String(s.clone()), J::Number),
        Yaml::Integer(i) => J::from(*i),
        Yaml::String(s) => J::String(s.clone()),
        Yaml::Boolean(b) => J::Bool(*b),
        Yaml::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => J::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) | Yaml::Real(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => String::new(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => J::Null,
    }
}

/// Compose interpolation of one string: `$$`, `$VAR`, `${VAR}`,
/// `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`,
/// `${VAR:+alt}`, `${VAR+alt}`.
fn interpolate(s: &str, env: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| invalid(format!("invalid interpolation format for {s:?}")))?;
            let inner = &r[..end];
            let name_len = inner
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(inner.len());
            let (name, op) = inner.split_at(name_len);
            let val = env.get(name);
            let set_nonempty = val.is_some_and(|v| !v.is_empty());
            let piece = if op.is_empty() {
                val.cloned().unwrap_or_default()
            } else if let Some(d) = op.strip_prefix(":-") {
                if set_nonempty {
                    val.cloned().unwrap_or_default()
                } else {
                    interpolate(d, env)?
                }
            } else if let Some(d) = op.strip_prefix('-') {
                match val {
                    Some(v) => v.clone(),
                    None => interpolate(d, env)?,
                }
            } else if let Some(m) = op.strip_prefix(":?") {
                if !set_nonempty {
                    return Err(invalid(format!(
                        "required variable {name} is missing a value: {m}"
                    )));
                }
                val.cloned().unwrap_or_default()
            } else if let Some(m) = op.strip_prefix('?') {
                val.cloned().ok_or_else(|| {
                    invalid(format!("required variable {name} is missing a value: {m}"))
                })?
            } else if let Some(a) = op.strip_prefix(":+") {
                if set_nonempty {
                    interpolate(a, env)?
                } else {
                    String::new()
                }
            } else if let Some(a) = op.strip_prefix('+') {
                if val.is_some() {
                    interpolate(a, env)?
                } else {
                    String::new()
                }
            } else {
                return Err(invalid(format!("invalid interpolation format for {s:?}")));
            };
            out.push_str(&piece);
            rest = &r[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(&after[..len]).map_or("", String::as_str));
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolate_all(v: &mut J, env: &BTreeMap<String, String>) -> Result<()> {
    match v {
        J::String(s) => *s = interpolate(s, env)?,
        J::Array(a) => {
            for x in a {
                interpolate_all(x, env)?;
            }
        }
        J::Object(o) => {
            for (_, x) in o.iter_mut() {
                interpolate_all(x, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn scalar(v: &J) -> Option<String> {
    match v {
        J::String(s) => Some(s.clone()),
        J::Number(n) => Some(n.to_string()),
        J::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(v: Option<&J>) -> Vec<String> {
    match v {
        Some(J::Array(a)) => a.iter().filter_map(scalar).collect(),
        Some(other) => scalar(other).into_iter().collect(),
        None => Vec::new(),
    }
}

/// A mapping written as a map or as a `KEY=VALUE` list; a key with no
/// value is `None`.
fn mapping(v: Option<&J>) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match v {
        Some(J::Object(o)) => {
            for (k, v) in o {
                out.insert(k.clone(), scalar(v));
            }
        }
        Some(J::Array(a)) => {
            for s in a.iter().filter_map(scalar) {
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_owned(), Some(v.to_owned())),
                    None => out.insert(s, None),
                };
            }
        }
        _ => {}
    }
    out
}

/// `filepath.Clean` for the relative and absolute paths compose writes.
fn clean(p: &str) -> String {
    if p.contains("://") || p.starts_with("git@") {
        return p.to_owned();
    }
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." if parts.last().is_some_and(|l| *l != "..") => {
                parts.pop();
            }
            ".." if abs => {}
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

fn named_contexts(m: BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    m.into_iter()
        .map(|(k, v)| {
            let v = v.unwrap_or_default();
            let v = match v.split_once(':') {
                Some(("service" | "target", t)) => format!("target:{}", t.replace('.', "_")),
                _ => v,
            };
            (k, v)
        })
        .collect()
}

/// Parses the compose files (merged service by service, later files over
/// earlier ones) into the targets of their `build:` sections.
pub fn parse(files: &[(String, String)], env: &BTreeMap<String, String>) -> Result<Config> {
    let mut services: serde_json::Map<String, J> = serde_json::Map::new();
    let mut secrets_def: serde_json::Map<String, J> = serde_json::Map::new();
    for (name, text) in files {
        let bad = |message: String| BakeError::Parse {
            file: name.clone(),
            message,
        };
        let docs = YamlLoader::load_from_str(text).map_err(|e| bad(e.to_string()))?;
        let Some(doc) = docs.first() else {
            return Err(bad("empty compose file".into()));
        };
        let mut doc = to_json(doc);
        interpolate_all(&mut doc, env).map_err(|e| bad(e.to_string()))?;
        if let Some(J::Object(s)) = doc.get("services") {
            for (k, v) in s {
                match (services.get_mut(k), v) {
                    (Some(J::Object(old)), J::Object(new)) => {
                        for (f, x) in new {
                            old.insert(f.clone(), x.clone());
                        }
                    }
                    _ => {
                        services.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(J::Object(s)) = doc.get("secrets") {
            for (k, v) in s {
                secrets_def.insert(k.clone(), v.clone());
            }
        }
    }
    let mut cfg = Config::default();
    let mut group = Group {
        name: "default".into(),
        ..Group::default()
    };
    for (service, def) in &services {
        let Some(build) = def.get("build") else {
            continue;
        };
        let name = service.replace('.', "_");
        crate::hcl_file::check_target_name(&name)
            .map_err(|e| invalid(format!("invalid service name {name:?}: {e}")))?;
        let build = match build {
            J::String(ctx) => serde_json::json!({ "context": ctx }),
            other => other.clone(),
        };
        let s = |k: &str| build.get(k).and_then(scalar).filter(|v| !v.is_empty());
        let what = format!("compose service {service}");
        let mut t = Target {
            name: name.clone(),
            context: s("context").map(|c| clean(&c)),
            dockerfile: s("dockerfile"),
            dockerfile_inline: s("dockerfile_inline"),
            target: s("target"),
            network: s("network"),
            ..Target::default()
        };
        if let Some(c) = build.get("additional_contexts") {
            t.contexts = Some(named_contexts(mapping(Some(c))));
        }
        // Args without a value come from the service's environment, then
        // the process environment; unresolved ones are dropped.
        let service_env = mapping(def.get("environment"));
        let mut args = NullableMap::new();
        for (k, v) in mapping(build.get("args")) {
            let v = v.or_else(|| {
                service_env
                    .get(&k)
                    .cloned()
                    .flatten()
                    .or_else(|| env.get(&k).cloned())
            });
            if let Some(v) = v {
                args.insert(k, Some(v));
            }
        }
        if !args.is_empty() {
            t.args = Some(args);
        }
        t.labels = Some(
            mapping(build.get("labels"))
                .into_iter()
                .map(|(k, v)| (k, Some(v.unwrap_or_default())))
                .collect(),
        );
        let tags = strings(build.get("tags"));
        t.tags = (!tags.is_empty()).then_some(tags);
        let mut cache_from = Vec::new();
        for c in strings(build.get("cache_from")) {
            cache_from
                .extend(entries::parse_cache(&c).map_err(|e| invalid(format!("{what}: {e}")))?);
        }
        t.cache_from = (!cache_from.is_empty()).then_some(cache_from);
        let mut cache_to = Vec::new();
        for c in strings(build.get("cache_to")) {
            cache_to.extend(entries::parse_cache(&c).map_err(|e| invalid(format!("{what}: {e}")))?);
        }
        t.cache_to = (!cache_to.is_empty()).then_some(cache_to);
        let platforms = strings(build.get("platforms"));
        t.platforms = (!platforms.is_empty()).then_some(platforms);
        let mut ssh = Vec::new();
        for (id, path) in mapping(build.get("ssh")) {
            ssh.push(entries::Ssh {
                id,
                paths: path.into_iter().collect(),
            });
        }
        ssh.sort_by(|a, b| a.id.cmp(&b.id));
        t.ssh = (!ssh.is_empty()).then_some(ssh);
        let mut secrets = Vec::new();
        for s in build
            .get("secrets")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
        {
            let source = match s {
                J::String(src) => src.clone(),
                J::Object(o) => o.get("source").and_then(scalar).unwrap_or_default(),
                _ => String::new(),
            };
            let d = secrets_def.get(&source);
            if d.and_then(|d| d.get("external"))
                .is_some_and(|e| e == &J::Bool(true))
            {
                return Err(invalid(format!(
                    "{what}: unsupported external secret {source}"
                )));
            }
            let field = |k: &str| {
                d.and_then(|d| d.get(k))
                    .and_then(scalar)
                    .unwrap_or_default()
            };
            secrets.push(entries::Secret {
                id: source.clone(),
                src: field("file"),
                env: field("environment"),
            });
        }
        t.secrets = (!secrets.is_empty()).then_some(secrets);
        if let Some(h) = build.get("extra_hosts") {
            t.extra_hosts = Some(
                mapping(Some(h))
                    .into_iter()
                    .map(|(k, v)| (k, Some(v.unwrap_or_default())))
                    .collect(),
            );
        }
        if build.get("no_cache") == Some(&J::Bool(true)) {
            t.no_cache = Some(true);
        }
        if build.get("pull") == Some(&J::Bool(true)) {
            t.pull = Some(true);
        }
        for unsupported in [
            "shm_size",
            "ulimits",
            "isolation",
            "privileged",
            "sbom",
            "provenance",
            "entitlements",
        ] {
            if build.get(unsupported).is_some() {
                return Err(invalid(format!(
                    "{what}: build.{unsupported} is not supported by strata bake"
                )));
            }
        }
        if let Some(x) = build.get("x-bake") {
            x_bake(&mut t, x, &what)?;
        }
        if t.tags.is_none()
            && let Some(image) = def.get("image").and_then(scalar).filter(|i| !i.is_empty())
        {
            t.tags = Some(vec![image]);
        }
        group.targets.push(name);
        cfg.targets.push(t);
    }
    cfg.groups.push(group);
    Ok(cfg)
}

/// The `x-bake` extension: bake keys compose has no field for.
fn x_bake(t: &mut Target, x: &J, what: &str) -> Result<()> {
    let err = |e: crate::error::BakeError| invalid(format!("{what}: x-bake: {e}"));
    let list = |k: &str| strings(x.get(k));
    let tags = list("tags");
    if !tags.is_empty() {
        let mut all = t.tags.take().unwrap_or_default();
        all.extend(tags);
        t.tags = Some(entries::dedup(all));
    }
    for (key, slot) in [("cache-from", 0), ("cache-to", 1)] {
        let mut parsed: Vec<Entry> = Vec::new();
        for c in list(key) {
            parsed.extend(entries::parse_cache(&c).map_err(err)?);
        }
        if !parsed.is_empty() {
            let target = if slot == 0 {
                &mut t.cache_from
            } else {
                &mut t.cache_to
            };
            let mut all = target.take().unwrap_or_default();
            all.extend(parsed);
            *target = Some(entries::dedup(all));
        }
    }
    let secrets = list("secret");
    if !secrets.is_empty() {
        let mut all = t.secrets.take().unwrap_or_default();
        for s in secrets {
            all.push(entries::parse_secret(&s).map_err(err)?);
        }
        t.secrets = Some(entries::dedup_secrets(all));
    }
    let ssh = list("ssh");
    if !ssh.is_empty() {
        let mut all = t.ssh.take().unwrap_or_default();
        all.extend(ssh.iter().map(|s| entries::parse_ssh(s)));
        let mut all = entries::dedup_ssh(all);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        t.ssh = Some(all);
    }
    let platforms = list("platforms");
    if !platforms.is_empty() {
        let mut all = t.platforms.take().unwrap_or_default();
        all.extend(platforms);
        t.platforms = Some(entries::dedup(all));
    }
    let outputs = list("output");
    if !outputs.is_empty() {
        let mut all = t.outputs.take().unwrap_or_default();
        for o in outputs {
            all.push(entries::parse_output(&o).map_err(err)?);
        }
        t.outputs = Some(entries::dedup(all));
    }
    let flag = |k: &str| match x.get(k) {
        Some(J::Bool(b)) => Ok(Some(*b)),
        Some(J::String(s)) => entries::parse_bool(s)
            .map(Some)
            .ok_or_else(|| invalid(format!("{what}: x-bake: {k}: expected a bool"))),
        Some(_) => Err(invalid(format!("{what}: x-bake: {k}: expected a bool"))),
        None => Ok(None),
    };
    if let Some(b) = flag("pull")? {
        t.pull = Some(b);
    }
    if let Some(b) = flag("no-cache")? {
        t.no_cache = Some(b);
    }
    let filter = list("no-cache-filter");
    if !filter.is_empty() {
        let mut all = t.no_cache_filter.take().unwrap_or_default();
        all.extend(filter);
        t.no_cache_filter = Some(entries::dedup(all));
    }
    if let Some(c) = x.get("contexts") {
        let add = named_contexts(mapping(Some(c)));
        let into = t.contexts.get_or_insert_with(BTreeMap::new);
        for (k, v) in add {
            into.entry(k).or_insert(v);
        }
    }
    if let Some(J::Object(o)) = Some(x)
        && let Some(k) = o.keys().find(|k| {
            !matches!(
                k.as_str(),
                "tags"
                    | "cache-from"
                    | "cache-to"
                    | "secret"
                    | "ssh"
                    | "platforms"
                    | "output"
                    | "pull"
                    | "no-cache"
                    | "no-cache-filter"
                    | "contexts"
            )
        })
    {
        return Err(invalid(format!("{what}: x-bake: unknown key {k:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolation_forms() {
        let env = BTreeMap::from([
            ("A".to_owned(), "x".to_owned()),
            ("E".to_owned(), String::new()),
        ]);
        let i = |s: &str| interpolate(s, &env).unwrap_or_else(|e| e.to_string());
        assert_eq!(i("$A-${A}-$$A"), "x-x-$A");
        assert_eq!(i("${B:-d}|${E:-d}|${E-d}|${A:+y}"), "d|d||y");
        assert!(interpolate("${B:?need B}", &env).is_err());
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./db"), "db");
        assert_eq!(clean("."), ".");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean("/x/./y/"), "/x/y");
    }
}
