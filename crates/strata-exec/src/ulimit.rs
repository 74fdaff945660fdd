//! `--ulimit NAME=SOFT[:HARD]`: a resource limit set on a step's process
//! before it runs its program, with docker/go-units' `ParseUlimit` syntax
//! and names (the ones buildx and `docker run` accept).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The names go-units maps to `RLIMIT_*` (its `ulimitNameMapping`); `as`
/// is not one of them.
const NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One resource limit. Values are go-units' int64s; `-1` is unlimited
/// (`RLIM_INFINITY` once cast, as go-units casts it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// A name of [`NAMES`] (`nofile`).
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

impl FromStr for Ulimit {
    type Err = String;

    /// go-units' messages, which buildx prints after `invalid argument
    /// "V" for "--ulimit" flag: `.
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, values) = s
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit argument: {s}"))?;
        if !NAMES.contains(&name) {
            return Err(format!(
                "invalid ulimit type: {name} (one of {})",
                NAMES.join(", ")
            ));
        }
        let parts: Vec<&str> = values.split(':').collect();
        if parts.len() > 2 {
            return Err(format!(
                "too many limit value arguments - {values}, can only have up to two, `soft[:hard]`"
            ));
        }
        let number = |v: &str| {
            v.parse::<i64>().map_err(|e| {
                format!("parsing {v:?}: {e} (a limit is a whole number, -1 for unlimited)")
            })
        };
        let soft = number(parts[0])?;
        let hard = match parts.get(1) {
            Some(h) => number(h)?,
            None => soft,
        };
        if soft > hard {
            return Err(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            ));
        }
        Ok(Self {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

impl fmt::Display for Ulimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.name, self.soft, self.hard)
    }
}

impl Ulimit {
    fn resource(&self) -> Option<nix::sys::resource::Resource> {
        use nix::sys::resource::Resource;
        Some(match self.name.as_str() {
            "core" => Resource::RLIMIT_CORE,
            "cpu" => Resource::RLIMIT_CPU,
            "data" => Resource::RLIMIT_DATA,
            "fsize" => Resource::RLIMIT_FSIZE,
            "locks" => Resource::RLIMIT_LOCKS,
            "memlock" => Resource::RLIMIT_MEMLOCK,
            "msgqueue" => Resource::RLIMIT_MSGQUEUE,
            "nice" => Resource::RLIMIT_NICE,
            "nofile" => Resource::RLIMIT_NOFILE,
            "nproc" => Resource::RLIMIT_NPROC,
            "rss" => Resource::RLIMIT_RSS,
            "rtprio" => Resource::RLIMIT_RTPRIO,
            "rttime" => Resource::RLIMIT_RTTIME,
            "sigpending" => Resource::RLIMIT_SIGPENDING,
            "stack" => Resource::RLIMIT_STACK,
            _ => return None,
        })
    }
}

/// Sets `limits` on this process (the step's, before it drops its
/// capabilities: raising a hard limit needs CAP_SYS_RESOURCE, which a
/// rootless step has only up to the limits its user namespace began with).
pub(crate) fn apply(limits: &[Ulimit]) -> Result<(), String> {
    for l in limits {
        let resource = l
            .resource()
            .ok_or_else(|| format!("--ulimit {l}: unknown limit"))?;
        // go-units casts int64 to uint64: -1 becomes RLIM_INFINITY.
        nix::sys::resource::setrlimit(resource, l.soft as u64, l.hard as u64)
            .map_err(|e| format!("--ulimit {l}: setrlimit: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_as_go_units_does() {
        let u: Ulimit = "nofile=1024:2048".parse().unwrap();
        assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
        let u: Ulimit = "nproc=50".parse().unwrap();
        assert_eq!((u.soft, u.hard), (50, 50));
        let u: Ulimit = "core=-1".parse().unwrap();
        assert_eq!((u.soft, u.hard), (-1, -1));
        for (bad, says) in [
            ("nofiles=1", "invalid ulimit type: nofiles"),
            ("as=1", "invalid ulimit type: as"),
            ("nofile=bad", "parsing \"bad\""),
            ("nofile= 5", "parsing \" 5\""),
            ("nofile=10:5", "10 > 5"),
            ("nofile=1:2:3", "too many limit value arguments"),
            ("nofile", "invalid ulimit argument"),
        ] {
            let e = bad.parse::<Ulimit>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
