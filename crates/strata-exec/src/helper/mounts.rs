//! Mounts inside the step's root: binds, RUN `--mount`s, and Docker's masked
//! and read-only kernel paths.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::context::err;
use crate::protocol::{HelperSpec, rel_target};
use crate::spec::Mount;

/// Bind-mounts `src` on `dst`, read-only when asked.
pub(super) fn bind(src: &Path, dst: &Path, readonly: bool) -> Result<(), String> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err(format!("bind {} on {}", src.display(), dst.display())))?;
    if readonly {
        mount(
            None::<&str>,
            dst,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(err(format!("make {} read-only", dst.display())))?;
    }
    Ok(())
}

/// Mounts the step's RUN `--mount`s (and `strata run -v` volumes) in `root`.
pub(super) fn setup_mounts(spec: &HelperSpec, root: &Path) -> Result<(), String> {
    let secrets = spec.state.join("secrets");
    for (i, m) in spec.step.mounts.iter().enumerate() {
        let target = root.join(rel_target(m.target())?);
        match m {
            Mount::Cache {
                dir,
                readonly,
                uid,
                gid,
                mode,
                ..
            } => {
                // First use: give the new cache directory its requested owner.
                if std::fs::read_dir(dir)
                    .map(|mut d| d.next().is_none())
                    .unwrap_or(false)
                {
                    std::os::unix::fs::chown(dir, Some(*uid), Some(*gid))
                        .map_err(err("chown cache"))?;
                    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(*mode & 0o7777))
                        .map_err(err("chmod cache"))?;
                }
                bind(dir, &target, *readonly)?
            }
            Mount::Bind {
                source, readwrite, ..
            } => {
                if *readwrite && std::fs::metadata(source).is_ok_and(|m| m.is_dir()) {
                    // Writes are discarded: an overlay with a throwaway upper
                    // on a tmpfs (so no trace reaches the disk).
                    let scratch = spec.state.join(format!("bind{i}"));
                    std::fs::create_dir_all(&scratch).map_err(err(scratch.display()))?;
                    mount(
                        Some("tmpfs"),
                        &scratch,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("mode=700"),
                    )
                    .map_err(err("tmpfs for rw bind"))?;
                    for d in ["u", "w"] {
                        std::fs::create_dir(scratch.join(d)).map_err(err("rw bind scratch"))?;
                    }
                    let opts = format!(
                        "lowerdir={},upperdir={},workdir={}",
                        source.display(),
                        scratch.join("u").display(),
                        scratch.join("w").display()
                    );
                    mount(
                        Some("overlay"),
                        &target,
                        Some("overlay"),
                        MsFlags::empty(),
                        Some(opts.as_str()),
                    )
                    .map_err(err(format!("writable bind of {}", source.display())))?;
                } else {
                    bind(source, &target, !*readwrite)?;
                }
            }
            Mount::Volume {
                source, readonly, ..
            } => bind(source, &target, *readonly)?,
            Mount::Tmpfs { size, .. } => {
                let opts = size.map(|s| format!("size={s}"));
                mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    opts.as_deref(),
                )
                .map_err(err(format!("tmpfs on {}", m.target())))?;
            }
            Mount::Secret {
                data,
                uid,
                gid,
                mode,
                ..
            } => {
                if std::fs::symlink_metadata(&secrets).is_err() {
                    std::fs::create_dir_all(&secrets).map_err(err("secrets dir"))?;
                    mount(
                        Some("tmpfs"),
                        &secrets,
                        Some("tmpfs"),
                        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                        Some("mode=700"),
                    )
                    .map_err(err("secrets tmpfs"))?;
                }
                let file = secrets.join(i.to_string());
                std::fs::write(&file, data).map_err(err("write secret"))?;
                std::os::unix::fs::chown(&file, Some(*uid), Some(*gid))
                    .map_err(err("chown secret"))?;
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode & 0o7777))
                    .map_err(err("chmod secret"))?;
                bind(&file, &target, true)?;
            }
            Mount::Ssh { socket, .. } => bind(socket, &target, false)?,
        }
    }
    Ok(())
}

/// Docker's masked and read-only kernel paths: what a build step has no
/// business reading or changing about the host.
const MASKED: [&str; 8] = [
    "proc/kcore",
    "proc/keys",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/latency_stats",
    "proc/scsi",
    "proc/acpi",
    "sys/firmware",
];
const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Hides or freezes the kernel paths a build step must not see or change.
pub(super) fn mask_kernel_files(root: &Path) -> Result<(), String> {
    for rel in MASKED {
        let p = root.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some("size=0"),
            )
            .map_err(err(format!("mask /{rel}")))?,
            Ok(_) => bind(Path::new("/dev/null"), &p, false)?,
            // Not present on this kernel: nothing to hide.
            Err(_) => {}
        }
    }
    for rel in READ_ONLY {
        let p = root.join(rel);
        if std::fs::symlink_metadata(&p).is_ok() {
            bind(&p, &p, true)?;
        }
    }
    Ok(())
}
