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
use std::fmt;
use std::str::FromStr;

use crate::Diagnostic;
use crate::expand::{ExpandError, expand_word};
use crate::parse::{Dockerfile, Instruction};

/// `os/arch[/variant]`, normalised as containerd's `platforms.Normalize` does
/// for the names people write (`x86_64`, `aarch64`, `arm64/v8`, `armhf`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    /// Empty when the architecture has none (amd64, arm64).
    pub variant: String,
}

impl Platform {
    /// The platform strata runs on (Linux only).
    pub fn host() -> Self {
        Self::normalized("linux", std::env::consts::ARCH, "")
    }

    fn normalized(os: &str, arch: &str, variant: &str) -> Self {
        let os = os.to_ascii_lowercase();
        let arch = arch.to_ascii_lowercase();
        let variant = variant.to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), variant.as_str()) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.to_owned()),
            ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", String::new()),
            ("aarch64" | "arm64", v) => ("arm64", v.to_owned()),
            ("armhf", _) => ("arm", "v7".to_owned()),
            ("armel", _) => ("arm", "v6".to_owned()),
            ("arm", "") => ("arm", "v7".to_owned()),
            ("arm", "5" | "6" | "7" | "8") => ("arm", format!("v{variant}")),
            ("i386" | "i486" | "i586" | "i686" | "386", v) => ("386", v.to_owned()),
            (a, v) => (a, v.to_owned()),
        };
        Platform {
            os,
            arch: arch.to_owned(),
            variant,
        }
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Self::normalized(os, arch, "")),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Ok(Self::normalized(os, arch, variant))
            }
            _ => Err(format!(
                "invalid platform {s:?}: expected OS/ARCH[/VARIANT], such as linux/amd64"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

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
            ("BUILDARCH", b.arch.clone()),
            ("BUILDVARIANT", b.variant.clone()),
            ("TARGETPLATFORM", t.to_string()),
            ("TARGETOS", t.os.clone()),
            ("TARGETARCH", t.arch.clone()),
            ("TARGETVARIANT", t.variant.clone()),
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageScope {
    /// In declaration order; a re-declaration appends, the last one wins.
    args: Vec<(String, Option<String>)>,
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
                Some(expand_word(
                    &d,
                    &|n| env(n).or_else(|| self.get(n)),
                    escape,
                )?)
            } else {
                global.get(&k).flatten().map(str::to_owned)
            };
            shown.push(match &v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
            self.args.push((k, v));
        }
        Ok(format!("ARG {}", shown.join(" ")))
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
    /// in the history (`runCommandString`): every ARG declaration, with the
    /// value the step's environment gives the name, else the ARG's own.
    pub fn history_prefix(&self, env: &dyn Fn(&str) -> Option<String>) -> String {
        if self.args.is_empty() {
            return String::new();
        }
        let mut out = format!("|{}", self.args.len());
        for (k, v) in &self.args {
            let v = env(k).or_else(|| v.clone()).unwrap_or_default();
            out.push_str(&format!(" {k}={v}"));
        }
        out
    }
}
