//! `--cgroup-parent`, as buildx takes it: parsed into
//! [`strata_exec::CgroupParent`] (a path below the cgroup2 root; `..` and
//! systemd slices refused) and checked before the build starts, so that a
//! machine where RUN steps get no cgroup refuses the flag instead of
//! ignoring it.

use crate::exit::UsageError;

#[derive(clap::Args)]
pub struct CgroupParentFlag {
    /// Set the parent cgroup for the RUN instructions during build, as
    /// buildx: a path below the cgroup2 root (`ci/jobs`), made when
    /// missing; needs root and a writable cgroup2 filesystem
    #[arg(long = "cgroup-parent", value_name = "CGROUP")]
    pub cgroup_parent: Option<String>,
}

impl CgroupParentFlag {
    /// The parent asked for, if any; a malformed one is a usage error.
    pub(crate) fn parsed(&self) -> Result<Option<strata_exec::CgroupParent>, UsageError> {
        self.cgroup_parent
            .as_deref()
            .map(|v| v.parse().map_err(UsageError))
            .transpose()
    }
}

/// Refuses a `--cgroup-parent` that steps cannot be put under here
/// (rootless, read-only cgroupfs, no cgroup2), before anything runs.
pub(crate) fn check(parent: Option<&strata_exec::CgroupParent>) -> Result<(), UsageError> {
    match parent {
        Some(p) => strata_exec::cgroup::check_parent(p)
            .map(|_| ())
            .map_err(UsageError),
        None => Ok(()),
    }
}
