//! `--cgroup-parent P`: the cgroup under which RUN steps' cgroups are made,
//! as buildx's flag ("Set the parent cgroup for the RUN instructions during
//! build").
//!
//! P is read as Docker reads it with the cgroupfs driver: a path relative to
//! the root of the cgroup2 hierarchy (a leading `/` changes nothing), so a
//! step's cgroup is `<cgroup2 mount>/P/<strata's pid>-ns<…>-step-XXXXXX`
//! instead of `<cgroup2 mount>/strata/…`. P is made when missing (as runc
//! makes a container's parents) and left in place afterwards: it is the
//! caller's cgroup, and other processes may be in it; only the step's own
//! cgroup goes when the step ends. systemd's `NAME.slice` syntax (the
//! systemd cgroup driver's) is refused: strata talks to no systemd. A `..`
//! component would leave the hierarchy and is refused too.
//!
//! Where steps get no cgroup at all ([`crate::cgroup::Support::Unavailable`]:
//! rootless, a read-only cgroupfs, no cgroup2 mount) the flag is refused,
//! never ignored ([`crate::cgroup::check_parent`], before a build starts).
//! A leaf: rules and paths; [`crate::cgroup`] makes the cgroups.

use std::path::{Path, PathBuf};

/// A validated `--cgroup-parent`: relative, normalised (no empty, `.` or
/// `..` components), not a systemd slice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CgroupParent(String);

impl std::str::FromStr for CgroupParent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(format!(
                        "--cgroup-parent {s:?}: `..` would leave the cgroup hierarchy; give a path below its root, such as `ci/jobs`"
                    ));
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return Err(format!(
                "--cgroup-parent {s:?}: names the root of the cgroup hierarchy; give a cgroup below it, such as `ci/jobs`"
            ));
        }
        if parts.len() == 1 && s.ends_with(".slice") {
            return Err(format!(
                "--cgroup-parent {s:?}: systemd slice syntax (the systemd cgroup driver's) is not supported: strata makes cgroups in cgroupfs directly; give the slice's path below the cgroup2 root instead (`system.slice/{s}` style paths are read as plain directories)"
            ));
        }
        Ok(CgroupParent(parts.join("/")))
    }
}

impl std::fmt::Display for CgroupParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl CgroupParent {
    /// `<mount>/P`.
    pub(crate) fn under(&self, mount: &Path) -> PathBuf {
        mount.join(&self.0)
    }

    /// The refusal where no step cgroup can be made, with why.
    pub(crate) fn unavailable(&self, why: &str) -> String {
        format!(
            "--cgroup-parent {self}: RUN steps get no cgroup here ({why}); run strata as root with a writable cgroup2 filesystem, or leave the flag out"
        )
    }
}

/// The cgroup2 mount, from the default parent (`<mount>/strata`).
pub(crate) fn cgroup2_root(default_parent: &Path) -> &Path {
    default_parent.parent().unwrap_or(default_parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<String, String> {
        s.parse::<CgroupParent>().map(|p| p.to_string())
    }

    #[test]
    fn relative_to_the_root_as_docker_reads_it() {
        assert_eq!(parse("ci").as_deref(), Ok("ci"));
        assert_eq!(parse("/ci/jobs/").as_deref(), Ok("ci/jobs"));
        assert_eq!(parse("ci//./jobs").as_deref(), Ok("ci/jobs"));
        // A directory that happens to end in .slice, below another, is a path.
        assert_eq!(
            parse("system.slice/ci.slice").as_deref(),
            Ok("system.slice/ci.slice")
        );
    }

    #[test]
    fn escapes_the_root_and_slices_are_refused() {
        let e = parse("ci/../../etc").unwrap_err();
        assert!(e.contains("`..` would leave the cgroup hierarchy"), "{e}");
        let e = parse("/").unwrap_err();
        assert!(e.contains("names the root"), "{e}");
        let e = parse("ci.slice").unwrap_err();
        assert!(e.contains("systemd slice syntax"), "{e}");
    }
}
