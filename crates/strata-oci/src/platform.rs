//! The one platform type (`os/arch[/variant]`) and the rules for naming and
//! matching platforms, as containerd's `platforms` package has them (which
//! BuildKit, Docker and the registries' clients all use):
//!
//! - [`Platform::normalized`] is `platforms.Normalize`: lower case,
//!   `macos` → `darwin`, `x86_64`/`x86-64` → `amd64` (variant `v1` dropped),
//!   `i386` → `386`, `aarch64` → `arm64` with `8`/`v8`/`v8.0` dropped (v8 is
//!   arm64's default) and `9`/`9.0`/`v9.0` → `v9`, `armhf` → `arm/v7`,
//!   `armel` → `arm/v6`, `arm` → `arm/v7` and `5`/`6`/`7`/`8` → `v5`…`v8`.
//! - [`Platform::matches`] is `platforms.Only(want).Match(have)`: the wanted
//!   platform, then what it can also run, in order of preference (amd64/vN →
//!   amd64/vN-1 … v1 → 386; arm/vN → arm/vN-1 … v5; arm64/v8.x → v8.x-1 …
//!   v8, arm64/v9.x → … v9, v8.x+5 … v8, then arm/v8 … v5).
//! - [`Platform::matches_strict`] is `platforms.OnlyStrict(want).Match(have)`:
//!   equal once both are normalised.
//! - [`Platform::pick`] chooses from an index as `Only(want)` sorts: the
//!   first entry matching the most preferred platform of that order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A platform as image indexes, configs and `--platform` name it. The serde
/// form is the OCI descriptor's `platform` object.
/// The default is empty (no OS, no architecture), as an image config
/// without them reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// `--platform` (or `FROM --platform=`) that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], such as linux/amd64")]
pub struct PlatformError(pub String);

/// The GOARCH name of the architecture strata was built for (and so runs on).
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

impl Platform {
    /// A platform as given (not normalised); an empty variant is none.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            os_version: None,
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        }
    }

    /// The platform strata runs on (Linux only), normalised.
    pub fn host() -> Self {
        Platform::new("linux", host_architecture(), None).normalized()
    }

    /// The variant, or "" when there is none (as `TARGETVARIANT` has it).
    pub fn variant(&self) -> &str {
        self.variant.as_deref().unwrap_or("")
    }

    /// containerd's `platforms.Normalize` (see the module docs).
    pub fn normalized(&self) -> Self {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_owned(),
            other => other.to_owned(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant().to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), variant.as_str()) {
            ("i386", _) => ("386", String::new()),
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", String::new()),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.to_owned()),
            ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", String::new()),
            ("aarch64" | "arm64", "9" | "9.0" | "v9.0") => ("arm64", "v9".to_owned()),
            ("aarch64" | "arm64", v) => ("arm64", v.to_owned()),
            ("armhf", _) => ("arm", "v7".to_owned()),
            ("armel", _) => ("arm", "v6".to_owned()),
            ("arm", "" | "7") => ("arm", "v7".to_owned()),
            ("arm", v @ ("5" | "6" | "8")) => ("arm", format!("v{v}")),
            (a, v) => (a, v.to_owned()),
        };
        Platform {
            architecture: arch.to_owned(),
            os,
            os_version: self.os_version.clone(),
            variant: Some(variant).filter(|v| !v.is_empty()),
        }
    }

    /// `platforms.OnlyStrict(self).Match(have)`: the same platform once both
    /// are normalised (so `linux/arm64` is `linux/aarch64/v8`).
    pub fn matches_strict(&self, have: &Platform) -> bool {
        same(&self.normalized(), &have.normalized())
    }

    /// `platforms.Only(self).Match(have)`: `have` is this platform or one it
    /// runs (see the module docs).
    pub fn matches(&self, have: &Platform) -> bool {
        self.preference(have).is_some()
    }

    /// Of `candidates`, the one `platforms.Only(self)` prefers: the first
    /// that matches the earliest platform of the preference order.
    pub fn pick<'a, T>(
        &self,
        candidates: impl IntoIterator<Item = (&'a Platform, T)>,
    ) -> Option<T> {
        candidates
            .into_iter()
            .filter_map(|(p, t)| self.preference(p).map(|rank| (rank, t)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, t)| t)
    }

    /// Where `have` comes in the preference order, if at all.
    fn preference(&self, have: &Platform) -> Option<usize> {
        let have = have.normalized();
        vector(&self.normalized())
            .iter()
            .position(|p| same(&p.normalized(), &have))
    }
}

/// Equal as containerd's matcher compares: os, architecture and variant
/// (the OS version only matters for Windows, which strata does not build).
fn same(a: &Platform, b: &Platform) -> bool {
    a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
}

/// containerd's `platformVector`: `p` (normalised), then what it can run.
fn vector(p: &Platform) -> Vec<Platform> {
    let with = |arch: &str, variant: Option<String>| Platform {
        architecture: arch.to_owned(),
        os: p.os.clone(),
        os_version: p.os_version.clone(),
        variant,
    };
    let number = |v: &str| v.strip_prefix('v').unwrap_or(v).parse::<u32>().ok();
    let mut out = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(n) = number(p.variant()).filter(|n| *n > 1) {
                out.extend((1..n).rev().map(|v| with("amd64", Some(format!("v{v}")))));
            }
            out.push(with("386", None));
        }
        "arm" => {
            if let Some(n) = number(p.variant()).filter(|n| *n > 5) {
                out.extend((5..n).rev().map(|v| with("arm", Some(format!("v{v}")))));
            }
        }
        "arm64" => {
            let variant = match p.variant() {
                "" => "v8",
                v => v,
            };
            out.clear();
            let Some(versions) = arm64_versions(variant) else {
                return out;
            };
            for (major, top) in versions {
                for minor in (0..=top).rev() {
                    let v = match minor {
                        0 => format!("v{major}"),
                        _ => format!("v{major}.{minor}"),
                    };
                    out.push(with("arm64", Some(v)));
                }
            }
            let arm = if variant.starts_with("v8") || variant.starts_with("v9") {
                "v8".to_owned()
            } else {
                variant.to_owned()
            };
            out.extend(vector(&with("arm", Some(arm))));
        }
        _ => {}
    }
    out
}

/// containerd's `arm64variantToVersion`: for each major version an arm64
/// variant runs, the highest minor one (v9.x runs v9.0…v9.x and v8.0…v8.x+5).
fn arm64_versions(variant: &str) -> Option<Vec<(u32, u32)>> {
    let v = variant.strip_prefix('v')?;
    let (major, minor): (u32, u32) = match v.split_once('.') {
        Some((major, minor)) => (major.parse().ok()?, minor.parse().ok()?),
        None => (v.parse().ok()?, 0),
    };
    match (major, minor) {
        (8, m) if m <= 9 => Some(vec![(8, m)]),
        (9, m) if m <= 7 => Some(vec![(9, m), (8, (m + 5).min(9))]),
        _ => None,
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// `os/arch[/variant]`, normalised.
    fn from_str(s: &str) -> Result<Self, PlatformError> {
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        let parts: Vec<&str> = s.split('/').collect();
        let p = match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Platform::new(os, arch, None),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => {
                Platform::new(os, arch, Some(variant))
            }
            _ => return Err(PlatformError(s.to_owned())),
        };
        Ok(p.normalized())
    }
}

impl fmt::Display for Platform {
    /// `linux/amd64`, `linux/arm/v7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        let mut parts = s.split('/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        Platform::new(os, arch, parts.next())
    }

    /// containerd's TestNormalize / TestParseSelector table (the rows for
    /// Linux platforms), input → normalised.
    #[test]
    fn normalisation_follows_containerd() {
        for (input, want) in [
            ("linux/amd64", "linux/amd64"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/i386", "linux/386"),
            ("linux/386", "linux/386"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64/8", "linux/arm64"),
            ("linux/arm64/v8.0", "linux/arm64"),
            ("linux/arm64/v8.2", "linux/arm64/v8.2"),
            ("linux/arm64/9", "linux/arm64/v9"),
            ("linux/arm64/v9.0", "linux/arm64/v9"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/arm/5", "linux/arm/v5"),
            ("linux/arm/8", "linux/arm/v8"),
            ("Linux/AMD64", "linux/amd64"),
            ("macos/arm64", "darwin/arm64"),
            ("linux/s390x", "linux/s390x"),
            ("linux/riscv64", "linux/riscv64"),
        ] {
            assert_eq!(p(input).normalized().to_string(), want, "{input}");
            assert_eq!(
                input.parse::<Platform>().map(|p| p.to_string()),
                Ok(want.to_owned()),
                "{input}"
            );
        }
        for bad in [
            "linux",
            "linux//amd64",
            "linux/amd64/v8/x",
            "",
            "linux/am d64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    /// containerd's TestOnly table (Linux rows): what `Only(want)` matches,
    /// and what `OnlyStrict(want)` does not.
    #[test]
    fn only_matches_what_containerd_matches() {
        for (want, yes, no) in [
            (
                "linux/amd64",
                &["linux/amd64", "linux/x86_64", "linux/386", "linux/amd64/v1"][..],
                &[
                    "linux/arm64",
                    "linux/arm/v7",
                    "linux/amd64/v2",
                    "windows/amd64",
                ][..],
            ),
            (
                "linux/amd64/v3",
                &[
                    "linux/amd64/v3",
                    "linux/amd64/v2",
                    "linux/amd64",
                    "linux/386",
                ][..],
                &["linux/amd64/v4"][..],
            ),
            (
                "linux/arm/v8",
                &[
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v6",
                    "linux/arm/v5",
                    "linux/arm",
                ][..],
                &["linux/arm64", "linux/amd64"][..],
            ),
            (
                "linux/arm/v7",
                &[
                    "linux/arm",
                    "linux/armhf",
                    "linux/arm/v6",
                    "linux/arm/v5",
                    "linux/armel",
                ][..],
                &["linux/arm/v8", "linux/arm64"][..],
            ),
            (
                "linux/arm/v6",
                &["linux/arm/v6", "linux/armel", "linux/arm/v5"][..],
                &["linux/arm/v7", "linux/arm"][..],
            ),
            (
                "linux/arm/v5",
                &["linux/arm/v5"][..],
                &["linux/arm/v6", "linux/arm/v7"][..],
            ),
            (
                "linux/arm64",
                &[
                    "linux/arm64",
                    "linux/aarch64",
                    "linux/arm64/v8",
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v5",
                ][..],
                &["linux/arm64/v8.1", "linux/arm64/v9", "linux/amd64"][..],
            ),
            (
                "linux/arm64/v8.2",
                &[
                    "linux/arm64/v8.2",
                    "linux/arm64/v8.1",
                    "linux/arm64",
                    "linux/arm/v7",
                ][..],
                &["linux/arm64/v8.3", "linux/arm64/v9"][..],
            ),
            (
                "linux/arm64/v9",
                &[
                    "linux/arm64/v9",
                    "linux/arm64/v8.5",
                    "linux/arm64",
                    "linux/arm/v8",
                ][..],
                &["linux/arm64/v8.6", "linux/arm64/v9.1"][..],
            ),
        ] {
            let want = p(want);
            for have in yes {
                assert!(want.matches(&p(have)), "{want} runs {have}");
            }
            for have in no {
                assert!(!want.matches(&p(have)), "{want} does not run {have}");
            }
            assert!(want.matches_strict(&want.normalized()));
        }
        assert!(p("linux/arm64").matches_strict(&p("linux/aarch64/v8")));
        assert!(!p("linux/amd64").matches_strict(&p("linux/386")));
        assert!(!p("linux/arm/v7").matches_strict(&p("linux/arm/v6")));
    }

    #[test]
    fn pick_prefers_the_exact_platform_then_the_fallbacks_in_order() {
        let list = [
            p("linux/386"),
            p("linux/arm/v5"),
            p("linux/arm/v6"),
            p("linux/amd64"),
            p("linux/arm64/v8"),
        ];
        let pick = |want: &str| {
            p(want)
                .pick(list.iter().enumerate().map(|(i, p)| (p, i)))
                .map(|i| list[i].to_string())
        };
        assert_eq!(pick("linux/amd64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/amd64/v2").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/s390x"), None);
    }

    #[test]
    fn host_is_normalised() {
        let h = Platform::host();
        assert_eq!(h, h.normalized());
        assert_eq!(h.os, "linux");
        assert_eq!(h.architecture, host_architecture());
    }
}
