//! From parsed files to the targets to build, as buildx's `ReadTargets`:
//! names and patterns expanded through groups, `inherits` applied, `--set`
//! overrides, defaults (`context = "."`, `dockerfile = "Dockerfile"`), and
//! targets named only by another's `contexts = { x = "target:NAME" }`
//! added as linked (cache-only) targets.

use std::collections::BTreeMap;

use crate::entries::{self, parse_bool};
use crate::error::{Result, invalid};
use crate::model::{Config, Group, Target};

/// One `--set` value for one target key.
#[derive(Debug, Clone, Default)]
struct Override {
    value: String,
    list: Vec<String>,
    append: bool,
}

type Overrides = BTreeMap<String, BTreeMap<String, Override>>;

/// Go's `path.Match` for the patterns `--set` and target arguments use
/// (`*`, `?`, `[...]`; `/` is not special for target names).
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(end) = p.iter().position(|c| *c == ']') else {
                    return false;
                };
                let Some(c) = n.first() else { return false };
                let set = &p[1..end];
                let (neg, set) = match set.first() {
                    Some('^' | '!') => (true, &set[1..]),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != neg && go(&p[end + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

impl Config {
    /// Merges same-named targets (later over earlier) and dedups group
    /// members (buildx's `dedupeConfig`).
    pub fn dedupe(&mut self) {
        let mut targets: Vec<Target> = Vec::new();
        for t in self.targets.drain(..) {
            match targets.iter_mut().find(|x| x.name == t.name) {
                Some(prev) => prev.merge(&t),
                None => targets.push(t),
            }
        }
        self.targets = targets;
        let mut groups: Vec<Group> = Vec::new();
        for g in self.groups.drain(..) {
            match groups.iter_mut().find(|x| x.name == g.name) {
                Some(prev) => {
                    prev.targets.extend(g.targets);
                    if g.description.is_some() {
                        prev.description = g.description;
                    }
                }
                None => groups.push(g),
            }
        }
        for g in &mut groups {
            g.targets = entries::dedup(std::mem::take(&mut g.targets));
        }
        self.groups = groups;
    }

    fn match_names(&self, pattern: &str) -> Result<Vec<String>> {
        if !pattern.contains(['*', '?', '[', ']']) {
            return Ok(vec![pattern.to_owned()]);
        }
        let names: Vec<String> = self
            .groups
            .iter()
            .map(|g| &g.name)
            .chain(self.targets.iter().map(|t| &t.name))
            .filter(|n| glob(pattern, n))
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(invalid(format!(
                "could not find any target matching {pattern:?}"
            )));
        }
        Ok(names)
    }

    fn expand_targets(&self, pattern: &str) -> Result<Vec<String>> {
        if self.targets.iter().any(|t| t.name == pattern) {
            return Ok(vec![pattern.to_owned()]);
        }
        let names: Vec<String> = self
            .targets
            .iter()
            .filter(|t| glob(pattern, &t.name))
            .map(|t| t.name.clone())
            .collect();
        if names.is_empty() {
            return Err(invalid(format!(
                "could not find any target matching '{pattern}'"
            )));
        }
        Ok(names)
    }

    fn overrides(
        &self,
        sets: &[String],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Overrides> {
        let mut m = Overrides::new();
        for v in sets {
            let (key, value) = match v.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (v.as_str(), None),
            };
            let append = key.ends_with('+');
            let skey = key.trim_end_matches('+');
            let keys: Vec<&str> = skey.splitn(3, '.').collect();
            if keys.len() < 2 {
                return Err(invalid(format!(
                    "invalid override key {skey}, expected target.name"
                )));
            }
            if value.is_none() && keys[1] != "args" {
                return Err(invalid(format!(
                    "invalid override {v}, expected target.name=value"
                )));
            }
            let okey = keys[1..].join(".");
            for name in self.expand_targets(keys[0])? {
                let t = m.entry(name).or_default();
                let o = t.entry(okey.clone()).or_default();
                match keys[1] {
                    "output" | "cache-to" | "cache-from" | "tags" | "platform" | "secrets"
                    | "ssh" | "attest" | "entitlements" | "network" | "annotations" => {
                        if let Some(v) = value {
                            o.append = append;
                            o.list.push(v.to_owned());
                        }
                    }
                    "secret" => {
                        if keys.len() != 3 {
                            return Err(invalid(format!(
                                "invalid key {key}, {} requires name",
                                keys[1]
                            )));
                        }
                        if append {
                            return Err(invalid(format!(
                                "invalid key {key}, {} does not support append",
                                keys[1]
                            )));
                        }
                        o.value = value.unwrap_or_default().to_owned();
                    }
                    "args" | "contexts" => {
                        if keys.len() != 3 {
                            return Err(invalid(format!(
                                "invalid key {key}, {} requires name",
                                keys[1]
                            )));
                        }
                        match value {
                            Some(v) => o.value = v.to_owned(),
                            // `--set t.args.X` takes X from the environment,
                            // and does nothing when it is unset.
                            None => match env(keys[2]) {
                                Some(v) => o.value = v,
                                None => {
                                    t.remove(&okey);
                                    continue;
                                }
                            },
                        }
                    }
                    _ => o.value = value.unwrap_or_default().to_owned(),
                }
            }
        }
        Ok(m)
    }

    /// The groups and targets `name` stands for (a group's members,
    /// recursively; else the name itself).
    fn resolve_group(&self, name: &str) -> (Vec<String>, Vec<String>) {
        fn go(
            c: &Config,
            name: &str,
            visited: &mut BTreeMap<String, (Vec<String>, Vec<String>)>,
        ) -> (Vec<String>, Vec<String>) {
            if let Some(v) = visited.get(name) {
                return v.clone();
            }
            let Some(g) = c.groups.iter().find(|g| g.name == name) else {
                return (vec![name.to_owned()], Vec::new());
            };
            visited.insert(name.to_owned(), (Vec::new(), Vec::new()));
            let mut targets = Vec::new();
            let mut groups = vec![name.to_owned()];
            for t in &g.targets {
                let (tt, tg) = go(c, t, visited);
                if tt.is_empty() {
                    targets.push(t.clone());
                } else {
                    targets.extend(tt);
                }
                groups.extend(tg);
            }
            visited.insert(name.to_owned(), (targets.clone(), groups.clone()));
            (targets, groups)
        }
        let (t, g) = go(self, name, &mut BTreeMap::new());
        (entries::dedup(t), entries::dedup(g))
    }

    fn target_chain(
        &self,
        name: &str,
        visited: &mut BTreeMap<String, Option<Target>>,
        o: &Overrides,
    ) -> Result<Option<Target>> {
        if let Some(t) = visited.get(name) {
            return Ok(t.clone());
        }
        visited.insert(name.to_owned(), None);
        let t = self
            .targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| invalid(format!("failed to find target {name}")))?;
        let mut inherited = Target::default();
        for parent in &t.inherits {
            if let Some(p) = self.target_chain(parent, visited, o)? {
                inherited.merge(&p);
            }
        }
        let mut m = Target::default();
        m.merge(&inherited);
        m.merge(t);
        m.name = name.to_owned();
        if let Some(ov) = o.get(name) {
            add_overrides(&mut m, ov)?;
        }
        m.normalize();
        visited.insert(name.to_owned(), Some(m.clone()));
        Ok(Some(m))
    }

    /// `ResolveTarget`: inheritance, overrides and defaults.
    fn resolve_target(&self, name: &str, o: &Overrides) -> Result<Target> {
        let mut t = self
            .target_chain(name, &mut BTreeMap::new(), o)?
            .ok_or_else(|| invalid(format!("failed to find target {name}")))?;
        t.inherits.clear();
        if t.context.is_none() {
            t.context = Some(".".into());
        }
        if t.dockerfile.as_deref().is_none_or(str::is_empty) {
            t.dockerfile = Some("Dockerfile".into());
        }
        Ok(t)
    }
}

fn add_overrides(t: &mut Target, overrides: &BTreeMap<String, Override>) -> Result<()> {
    let mut secret_overrides = Vec::new();
    for (key, o) in overrides {
        let value = o.value.clone();
        let (head, sub) = match key.split_once('.') {
            Some((h, s)) => (h, Some(s)),
            None => (key.as_str(), None),
        };
        let need_sub = |what: &str| {
            sub.map(str::to_owned).ok_or_else(|| {
                invalid(format!(
                    "invalid format for {what}, expecting {what}.<name>=<value>"
                ))
            })
        };
        let bool_of = |what: &str| {
            parse_bool(&value)
                .ok_or_else(|| invalid(format!("invalid value {value} for boolean key {what}")))
        };
        let list = |l: &mut Option<Vec<String>>| {
            if o.append {
                l.get_or_insert_with(Vec::new)
                    .extend(o.list.iter().cloned());
            } else {
                *l = Some(o.list.clone());
            }
        };
        match head {
            "context" => t.context = Some(value),
            "dockerfile" => t.dockerfile = Some(value),
            "args" => {
                let k = need_sub("args")?;
                t.args
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, Some(value));
            }
            "contexts" => {
                let k = need_sub("contexts")?;
                t.contexts
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, value);
            }
            "labels" => {
                let k = need_sub("labels")?;
                t.labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, Some(value));
            }
            "extra-hosts" => {
                let k = need_sub("extra-hosts")?;
                t.extra_hosts
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, Some(value));
            }
            "tags" => list(&mut t.tags),
            "platform" => list(&mut t.platforms),
            "no-cache-filter" => list(&mut t.no_cache_filter),
            "ulimits" => list(&mut t.ulimits),
            "annotations" => t
                .annotations
                .get_or_insert_with(Vec::new)
                .extend(o.list.iter().cloned()),
            "entitlements" => t
                .entitlements
                .get_or_insert_with(Vec::new)
                .extend(o.list.iter().cloned()),
            "cache-from" | "cache-to" => {
                let mut parsed = Vec::new();
                for c in &o.list {
                    parsed.extend(entries::parse_cache(c)?);
                }
                let slot = if head == "cache-from" {
                    &mut t.cache_from
                } else {
                    &mut t.cache_to
                };
                if o.append {
                    let mut all = slot.take().unwrap_or_default();
                    all.extend(parsed);
                    *slot = Some(entries::dedup(all));
                } else {
                    *slot = Some(parsed);
                }
            }
            "target" => t.target = Some(value),
            "call" => t.call = Some(value),
            "secret" => secret_overrides.push((need_sub("secret")?, value)),
            "secrets" => {
                let parsed = o
                    .list
                    .iter()
                    .map(|s| entries::parse_secret(s))
                    .collect::<Result<Vec<_>>>()?;
                if o.append {
                    let mut all = t.secrets.take().unwrap_or_default();
                    all.extend(parsed);
                    t.secrets = Some(entries::dedup_secrets(all));
                } else {
                    t.secrets = Some(parsed);
                }
            }
            "ssh" => {
                let parsed: Vec<_> = o.list.iter().map(|s| entries::parse_ssh(s)).collect();
                if o.append {
                    let mut all = t.ssh.take().unwrap_or_default();
                    all.extend(parsed);
                    t.ssh = Some(entries::dedup_ssh(all));
                } else {
                    t.ssh = Some(parsed);
                }
            }
            "output" => {
                let parsed = o
                    .list
                    .iter()
                    .map(|s| entries::parse_output(s))
                    .collect::<Result<Vec<_>>>()?;
                if o.append {
                    let mut all = t.outputs.take().unwrap_or_default();
                    all.extend(parsed);
                    t.outputs = Some(entries::dedup(all));
                } else {
                    t.outputs = Some(parsed);
                }
            }
            "attest" => {
                let mut all = t.attest.take().unwrap_or_default();
                for a in &o.list {
                    all.push(entries::parse_attest(a)?);
                }
                t.attest = Some(entries::dedup_attests(all));
            }
            "no-cache" => t.no_cache = Some(bool_of("no-cache")?),
            "pull" => t.pull = Some(bool_of("pull")?),
            "shm-size" => t.shm_size = Some(value),
            "network" => t.network = Some(value),
            "push" | "load" => {
                let on = bool_of(head)?;
                set_push_load(t, head, on);
            }
            other => return Err(invalid(format!("unknown key: {other}"))),
        }
    }
    for (id, value) in secret_overrides {
        let next = entries::parse_secret(&value)?;
        let s = t
            .secrets
            .iter_mut()
            .flatten()
            .find(|s| s.id == id)
            .ok_or_else(|| {
                invalid(format!(
                    "secret {id:?} must be declared before it can be overridden"
                ))
            })?;
        s.src = next.src;
        s.env = next.env;
    }
    Ok(())
}

/// `--set t.push=true` / `t.load=true`: buildx's setPushOverride /
/// setLoadOverride, simplified to the outputs strata has: push marks
/// image outputs `push=true` (adding one when none), load adds a
/// `type=docker` output.
fn set_push_load(t: &mut Target, key: &str, on: bool) {
    let outs = t.outputs.get_or_insert_with(Vec::new);
    if key == "push" {
        let mut found = false;
        for o in outs.iter_mut() {
            if matches!(
                o.get("type").map(String::as_str),
                Some("image" | "registry")
            ) {
                found = true;
                o.insert("push".into(), on.to_string());
            }
        }
        if !found && on {
            outs.push(entries::Entry::from([
                ("type".into(), "image".into()),
                ("push".into(), "true".into()),
            ]));
        }
    } else if on
        && !outs
            .iter()
            .any(|o| o.get("type").map(String::as_str) == Some("docker"))
    {
        outs.push(entries::Entry::from([("type".into(), "docker".into())]));
    }
}

/// What `read_targets` resolved: the targets by name (with linked ones)
/// and the groups to print.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub targets: BTreeMap<String, Target>,
    pub groups: BTreeMap<String, Group>,
}

/// buildx's `ReadTargets` over a parsed configuration.
pub fn read_targets(
    c: &Config,
    names: &[String],
    sets: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved> {
    let mut wanted = Vec::new();
    for n in names {
        wanted.extend(c.match_names(&n.replace('.', "_"))?);
    }
    let wanted = entries::dedup(wanted);
    let o = c.overrides(sets, env)?;
    let mut out = Resolved::default();
    for w in &wanted {
        let (ts, gs) = c.resolve_group(w);
        for t in ts {
            let r = c.resolve_target(&t, &o)?;
            out.targets.insert(t, r);
        }
        for g in gs {
            if let Some(group) = c.groups.iter().find(|x| x.name == g) {
                out.groups.insert(g, group.clone());
            }
        }
    }
    for w in &wanted {
        if w == "default" && out.groups.contains_key("default") {
            continue;
        }
        out.groups
            .entry("default".into())
            .or_insert_with(|| Group {
                name: "default".into(),
                ..Group::default()
            })
            .targets
            .push(w.clone());
    }
    if let Some(g) = out.groups.get_mut("default") {
        let mut t = entries::dedup(std::mem::take(&mut g.targets));
        t.sort();
        g.targets = t;
    }
    let names: Vec<String> = out.targets.keys().cloned().collect();
    for name in names {
        load_links(c, &name, &mut out.targets, &o, &mut Vec::new())?;
    }
    Ok(out)
}

fn load_links(
    c: &Config,
    name: &str,
    m: &mut BTreeMap<String, Target>,
    o: &Overrides,
    visited: &mut Vec<String>,
) -> Result<()> {
    visited.push(name.to_owned());
    let Some(t) = m.get(name) else {
        return Ok(());
    };
    let links: Vec<String> = t
        .contexts
        .iter()
        .flatten()
        .filter_map(|(_, v)| v.strip_prefix("target:").map(str::to_owned))
        .collect();
    let platforms = t.platforms.clone().unwrap_or_default();
    for other in links {
        if other == name {
            return Err(invalid(format!("target {other} cannot link to itself")));
        }
        if visited.contains(&other) {
            return Err(invalid(format!("infinite loop from {name} to {other}")));
        }
        if !m.contains_key(&other) {
            let mut t2 = c.resolve_target(&other, o)?;
            t2.outputs = Some(vec![entries::Entry::from([(
                "type".into(),
                "cacheonly".into(),
            )])]);
            t2.linked = true;
            m.insert(other.clone(), t2);
        }
        load_links(c, &other, m, o, &mut visited.clone())?;
        let other_platforms = m
            .get(&other)
            .and_then(|t| t.platforms.clone())
            .unwrap_or_default();
        if platforms.len() > 1
            && other_platforms.len() > 1
            && !platforms.iter().all(|p| other_platforms.contains(p))
        {
            return Err(invalid(format!(
                "target {other} can't be used by {name} because its platforms {platforms:?} are not a subset of {other_platforms:?}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_patterns() {
        assert!(glob("app-*", "app-a"));
        assert!(glob("a?c", "abc"));
        assert!(glob("[ab]x", "bx"));
        assert!(!glob("[!ab]x", "bx"));
        assert!(!glob("app-*", "db"));
    }
}
