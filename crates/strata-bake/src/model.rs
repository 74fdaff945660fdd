//! Targets and groups as buildx models them (`bake.Target`, `bake.Group`):
//! every key optional, so that "unset" and "set to empty" stay apart when
//! targets are merged, and the merge rules of `Target.Merge`.

use std::collections::BTreeMap;

use crate::entries::{Entry, Secret, Ssh, dedup, dedup_attests, dedup_secrets, dedup_ssh};

/// A map whose values may be null (`args = { A = null }`): a null never
/// overrides an inherited value.
pub type NullableMap = BTreeMap<String, Option<String>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub targets: Vec<String>,
}

/// One target. Field order is the order `--print` writes keys in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    pub name: String,
    pub description: Option<String>,
    pub inherits: Vec<String>,
    pub annotations: Option<Vec<String>>,
    pub attest: Option<Vec<Entry>>,
    pub context: Option<String>,
    pub contexts: Option<BTreeMap<String, String>>,
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub args: Option<NullableMap>,
    pub labels: Option<NullableMap>,
    pub tags: Option<Vec<String>>,
    pub cache_from: Option<Vec<Entry>>,
    pub cache_to: Option<Vec<Entry>>,
    pub target: Option<String>,
    pub secrets: Option<Vec<Secret>>,
    pub ssh: Option<Vec<Ssh>>,
    pub platforms: Option<Vec<String>>,
    pub outputs: Option<Vec<Entry>>,
    pub pull: Option<bool>,
    pub no_cache: Option<bool>,
    pub network: Option<String>,
    pub no_cache_filter: Option<Vec<String>>,
    pub shm_size: Option<String>,
    pub ulimits: Option<Vec<String>>,
    pub call: Option<String>,
    pub entitlements: Option<Vec<String>>,
    pub extra_hosts: Option<NullableMap>,
    /// Set on a target that is built only because another target's
    /// `contexts` names it (`target:NAME`): its output is the cache only.
    pub linked: bool,
}

/// The files' groups and targets, in file order (same-named targets
/// already merged).
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub groups: Vec<Group>,
    pub targets: Vec<Target>,
}

fn merge_nullable(into: &mut Option<NullableMap>, from: &Option<NullableMap>) {
    if let Some(m) = from {
        for (k, v) in m {
            if v.is_some() {
                into.get_or_insert_with(BTreeMap::new)
                    .insert(k.clone(), v.clone());
            }
        }
    }
}

fn append<T: Clone>(into: &mut Option<Vec<T>>, from: &Option<Vec<T>>) {
    if let Some(v) = from {
        into.get_or_insert_with(Vec::new).extend(v.iter().cloned());
    }
}

fn replace<T: Clone>(into: &mut Option<T>, from: &Option<T>) {
    if from.is_some() {
        into.clone_from(from);
    }
}

/// A list buildx normalises to nil when empty.
fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v) }
}

impl Target {
    /// `Target.Merge`: `other`'s keys over `self`'s, each with buildx's
    /// rule (replace, merge maps, or append lists).
    pub fn merge(&mut self, o: &Target) {
        replace(&mut self.context, &o.context);
        replace(&mut self.dockerfile, &o.dockerfile);
        replace(&mut self.dockerfile_inline, &o.dockerfile_inline);
        merge_nullable(&mut self.args, &o.args);
        if let Some(c) = &o.contexts {
            let into = self.contexts.get_or_insert_with(BTreeMap::new);
            for (k, v) in c {
                into.insert(k.clone(), v.clone());
            }
        }
        merge_nullable(&mut self.labels, &o.labels);
        replace(&mut self.tags, &o.tags);
        replace(&mut self.target, &o.target);
        replace(&mut self.call, &o.call);
        append(&mut self.annotations, &o.annotations);
        if let Some(a) = &o.attest {
            let mut all = self.attest.take().unwrap_or_default();
            all.extend(a.iter().cloned());
            self.attest = non_empty(dedup_attests(all));
        }
        if let Some(s) = &o.secrets {
            let mut all = self.secrets.take().unwrap_or_default();
            all.extend(s.iter().cloned());
            self.secrets = non_empty(dedup_secrets(all));
        }
        if let Some(s) = &o.ssh {
            let mut all = self.ssh.take().unwrap_or_default();
            all.extend(s.iter().cloned());
            self.ssh = non_empty(dedup_ssh(all));
        }
        replace(&mut self.platforms, &o.platforms);
        if let Some(c) = &o.cache_from {
            let mut all = self.cache_from.take().unwrap_or_default();
            all.extend(c.iter().cloned());
            self.cache_from = non_empty(dedup(all));
        }
        replace(&mut self.cache_to, &o.cache_to);
        replace(&mut self.outputs, &o.outputs);
        replace(&mut self.pull, &o.pull);
        replace(&mut self.no_cache, &o.no_cache);
        replace(&mut self.network, &o.network);
        append(&mut self.no_cache_filter, &o.no_cache_filter);
        replace(&mut self.shm_size, &o.shm_size);
        append(&mut self.ulimits, &o.ulimits);
        if o.description.as_deref().is_some_and(|d| !d.is_empty()) {
            self.description.clone_from(&o.description);
        }
        append(&mut self.entitlements, &o.entitlements);
        merge_nullable(&mut self.extra_hosts, &o.extra_hosts);
        self.inherits.extend(o.inherits.iter().cloned());
    }

    /// `Target.normalize`: duplicates dropped, empty lists and empty
    /// contexts removed.
    pub fn normalize(&mut self) {
        let strings = |v: &mut Option<Vec<String>>| {
            if let Some(list) = v.take() {
                *v = non_empty(dedup(list));
            }
        };
        strings(&mut self.annotations);
        strings(&mut self.tags);
        strings(&mut self.platforms);
        strings(&mut self.no_cache_filter);
        strings(&mut self.ulimits);
        if let Some(a) = self.attest.take() {
            self.attest = non_empty(dedup_attests(a));
        }
        if let Some(s) = self.secrets.take() {
            self.secrets = non_empty(dedup_secrets(s));
        }
        if let Some(s) = self.ssh.take() {
            self.ssh = non_empty(dedup_ssh(s));
        }
        for list in [&mut self.cache_from, &mut self.cache_to, &mut self.outputs] {
            if let Some(v) = list.take() {
                *list = non_empty(dedup(v));
            }
        }
        if self.network.as_deref() == Some("host") {
            self.entitlements
                .get_or_insert_with(Vec::new)
                .push("network.host".into());
        }
        strings(&mut self.entitlements);
        if let Some(c) = &mut self.contexts {
            c.retain(|_, v| !v.is_empty());
            if c.is_empty() {
                self.contexts = None;
            }
        }
    }
}
