//! ARG scoping as the reference's `dockerfile2llb` does it: the global scope
//! (the predefined platform ARGs, then the ARGs before the first FROM), each
//! stage's own ARGs, and the proxy build args that RUN sees without a
//! declaration.
//!
//! Reference behaviour (moby/buildkit `frontend/dockerfile/dockerfile2llb`):
//! - `getPlatformArgs` puts BUILDPLATFORM, BUILDOS, BUILDARCH, BUILDVARIANT,
//!   TARGETPLATFORM, TARGETOS, TARGETARCH and TARGETVARIANT in the global
//!   scope, each overridable by `--build-arg` (`setKVValue`); global ARGs
//!   follow in order, their defaults expanded with what precedes them.
//! - `dispatchArg`: a stage ARG takes the `--build-arg` value, else its
//!   default (expanded), else the global value of the same name (so
//!   `ARG TARGETARCH` with no default re-declares the predefined value).
//! - `proxyEnvFromBuildArgs` picks http_proxy, https_proxy, ftp_proxy,
//!   no_proxy and all_proxy from the build args, case-insensitively; the
//!   executor sets both the upper- and lower-case names (`proxyEnvList`),
//!   the exec cache key drops them (`op.Meta.ProxyEnv = nil`), and as they
//!   are not stage ARGs they never reach the history.

use std::collections::BTreeMap;

use crate::Diagnostic;
use crate::expand::{ExpandError, expand_word};
use crate::parse::{Dockerfile, Instruction};

/// `os/arch[/variant]`: strata-oci's one platform type, normalised as
/// containerd's `platforms.Normalize` does (`x86_64`, `aarch64`, `arm64/v8`,
/// `armhf`), which is what BuildKit derives TARGETARCH and friends from.
pub use strata_oci::Platform;

/// What a build is given from outside the Dockerfile that ARGs can see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    /// `--build-arg KEY=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// Where steps run (BUILDPLATFORM and friends).
    pub build_platform: Platform,
    /// What the image is for (TARGETPLATFORM and friends).
    pub target_platform: Platform,
}

impl BuildInputs {
    /// Building on and for the host.
    pub fn host(build_args: BTreeMap<String, String>) -> Self {
        BuildInputs {
            build_args,
            build_platform: Platform::host(),
            target_platform: Platform::host(),
        }
    }

    /// The predefined platform ARGs with their values, `--build-arg` winning.
    pub fn platform_args(&self) -> Vec<(String, String)> {
        let (b, t) = (&self.build_platform, &self.target_platform);
        [
            ("BUILDPLATFORM", b.to_string()),
            ("BUILDOS", b.os.clone()),
            ("BUILDARCH", b.architecture.clone()),
            ("BUILDVARIANT", b.variant().to_owned()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETARCH", t.architecture.clone()),
            ("TARGETVARIANT", t.variant().to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| {
            let v = self.build_args.get(k).cloned().unwrap_or(v);
            (k.to_owned(), v)
        })
        .collect()
    }

    /// The environment a RUN gets for the proxy build args, which need no
    /// ARG: `NAME=value` in both cases for each one given.
    pub fn proxy_env(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in PROXY_ARGS {
            // Several spellings of one name: the first in sorted order
            // (upper case sorts first) wins; the reference's pick is random.
            if let Some((_, v)) = self
                .build_args
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(p))
            {
                out.push(format!("{}={v}", p.to_ascii_uppercase()));
                out.push(format!("{p}={v}"));
            }
        }
        out
    }
}

/// The predefined platform ARG names.
pub const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
];

/// The proxy build args (matched case-insensitively).
pub const PROXY_ARGS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// Whether `name` is one of the proxy build args, in any case.
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// The global scope: platform ARGs, then the ARGs before the first FROM.
/// An ARG declared without a value and with no `--build-arg` is present
/// but unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalScope {
    vars: Vec<(String, Option<String>)>,
}

impl GlobalScope {
    pub fn new(df: &Dockerfile, inputs: &BuildInputs) -> Result<Self, Diagnostic> {
        let mut scope = GlobalScope {
            vars: inputs
                .platform_args()
                .into_iter()
                .map(|(k, v)| (k, Some(v)))
                .collect(),
        };
        let mut bytes = 0;
        for ins in df.instructions.iter().take_while(|i| i.keyword != "from") {
            if ins.keyword != "arg" {
                continue;
            }
            for (k, default) in ins.arg_pairs() {
                let v = match inputs.build_args.get(&k) {
                    Some(v) => Some(v.clone()),
                    None => match default {
                        Some(d) => Some(
                            expand_word(&d, &|n| scope.lookup(n), df.escape)
                                .map_err(|e| df.error(ins, &e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                charge(&mut bytes, v.as_ref()).map_err(|e| df.error(ins, &e.to_string()))?;
                scope.vars.push((k, v));
            }
        }
        Ok(scope)
    }

    /// The entry for `name`: `Some(None)` when declared without a value.
    pub fn get(&self, name: &str) -> Option<Option<&str>> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The value FROM lines see: a declared-but-unset ARG reads as empty,
    /// as the reference's `metaArgsToMap` gives it.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).map(|v| v.unwrap_or_default().to_owned())
    }

    /// Every entry in declaration order (platform ARGs first).
    pub fn vars(&self) -> &[(String, Option<String>)] {
        &self.vars
    }
}

/// The ARGs a stage has declared so far.
///
/// In the reference an ARG with a value is added to the step environment
/// (`d.state.AddEnv`) as ENV is, so whichever of the two set a name last
/// wins there: `ENV V=1` then `ARG V=2` gives RUN `V=2`, while the image's
/// Env keeps `V=1`. A stage built FROM another stage starts with that
/// stage's ARGs (`d.buildArgs = append(d.buildArgs, d.base.buildArgs...)`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageScope {
    /// In declaration order; a re-declaration appends, the last one wins.
    args: Vec<(String, Option<String>)>,
    /// Names whose ARG value was set after any ENV of the same name, so it
    /// beats the image's Env in the step environment.
    over_env: Vec<String>,
    /// Bytes of every value declared so far, re-declarations included.
    bytes: usize,
}

/// The most bytes the ARG values of one scope (the global one, or a stage)
/// may add up to. Each value is capped by
/// [`crate::expand::MAX_WORD_BYTES`]; this caps how many of them a
/// Dockerfile can pile up (every stored value stays in memory for the
/// whole build).
pub const MAX_SCOPE_BYTES: usize = 16 << 20;

fn charge(total: &mut usize, value: Option<&String>) -> Result<(), ExpandError> {
    *total = total.saturating_add(value.map_or(0, String::len));
    if *total > MAX_SCOPE_BYTES {
        return Err(ExpandError(format!(
            "ARG values add up to more than {MAX_SCOPE_BYTES} bytes ({total} bytes)"
        )));
    }
    Ok(())
}

impl StageScope {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one ARG instruction. `env` is what a default's expansion
    /// sees (the stage's ENV and the ARGs before this one). Returns the
    /// history text, `ARG NAME=value ...` with the values resolved.
    pub fn declare(
        &mut self,
        ins: &Instruction,
        global: &GlobalScope,
        inputs: &BuildInputs,
        env: &dyn Fn(&str) -> Option<String>,
        escape: char,
    ) -> Result<String, ExpandError> {
        let mut shown = Vec::new();
        for (k, default) in ins.arg_pairs() {
            let v = if let Some(v) = inputs.build_args.get(&k) {
                Some(v.clone())
            } else if let Some(d) = default {
                Some(expand_word(&d, &|n| self.lookup(env, n), escape)?)
            } else {
                global.get(&k).flatten().map(str::to_owned)
            };
            charge(&mut self.bytes, v.as_ref())?;
            shown.push(match &v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
            if v.is_some() && !self.over_env.contains(&k) {
                self.over_env.push(k.clone());
            }
            self.args.push((k, v));
        }
        Ok(format!("ARG {}", shown.join(" ")))
    }

    /// Records that ENV set `name`: from here on the image's value beats an
    /// ARG declared before.
    pub fn env_set(&mut self, name: &str) {
        self.over_env.retain(|n| n != name);
    }

    /// What `name` reads as in the step environment, given the image's Env
    /// as `env`: the ARG's value when it was set after the last ENV of that
    /// name, else the Env's, else the ARG's.
    pub fn lookup(&self, env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
        if self.over_env.iter().any(|n| n == name)
            && let Some(v) = self.get(name)
        {
            return Some(v);
        }
        env(name).or_else(|| self.get(name))
    }

    /// The environment a RUN step gets: the image's Env (`KEY=VALUE`
    /// lines) with each ARG that beats it replaced in place, then the other
    /// ARGs with a value that the Env lacks, in declaration order.
    pub fn step_env(&self, image_env: &[String]) -> Vec<String> {
        let mut env = image_env.to_vec();
        for (k, v) in self.env() {
            let at = env
                .iter()
                .position(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k);
            match at {
                Some(i) if self.over_env.contains(&k) => env[i] = format!("{k}={v}"),
                Some(_) => {}
                None => env.push(format!("{k}={v}")),
            }
        }
        env
    }

    /// The value of a declared ARG; `None` when undeclared or unset.
    pub fn get(&self, name: &str) -> Option<String> {
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    /// The ARGs with a value, each once (its last value), in the order
    /// first declared: the variables a RUN step gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, _) in &self.args {
            if out.iter().any(|(n, _)| n == k) {
                continue;
            }
            if let Some(v) = self.get(k) {
                out.push((k.clone(), v));
            }
        }
        out
    }

    /// The `|N K=V ...` prefix the reference writes before a RUN's command
    /// in the history (`runCommandString`): each declared name once, where
    /// it was first declared, with the value the step's environment gives
    /// it (`env`), else its last declaration's own.
    pub fn history_prefix(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        let mut shown: Vec<(&str, String)> = Vec::new();
        for (k, v) in &self.args {
            let v = env(k).or_else(|| v.clone()).unwrap_or_default();
            match shown.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v,
                None => shown.push((k, v)),
            }
        }
        if shown.is_empty() {
            return String::new();
        }
        let mut out = format!("|{}", shown.len());
        for (k, v) in shown {
            out.push_str(&format!(" {k}={v}"));
        }
        out
    }
}
