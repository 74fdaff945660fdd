//! Mounts inside the step's root: binds, RUN `--mount`s, and Docker's masked
//! and read-only kernel paths.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::statvfs::FsFlags;

use super::context::err;
use crate::protocol::{HelperSpec, rel_target};
use crate::spec::Mount;

/// Bind-mounts `src` on `dst`, `nodev` (so a device node reached through
/// it cannot be opened) and read-only when asked.
pub(super) fn bind(src: &Path, dst: &Path, readonly: bool) -> Result<(), String> {
    bind_device(src, dst)?;
    let mut add = MsFlags::MS_NODEV;
    if readonly {
        add |= MsFlags::MS_RDONLY;
    }
    remount_adding(dst, add)
}

/// Bind-mounts `src` on `dst` as it is: only for the device nodes a step is
/// given (`/dev/null` and friends) and `/dev/null` masks.
pub(super) fn bind_device(src: &Path, dst: &Path) -> Result<(), String> {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err(format!("bind {} on {}", src.display(), dst.display())))
}

/// `ST_RELATIME` in a `statvfs` `f_flag` (linux/statfs.h); glibc's libc
/// has it, musl's does not.
const ST_RELATIME: libc::c_ulong = 0x1000;

/// Adds `add` to the per-mount flags of the mount at `dst`, keeping the ones
/// it has: in a user namespace, flags inherited from a more privileged mount
/// (nosuid, nodev, noexec, ro, atime) are locked and a remount that clears
/// one fails with EPERM.
pub(super) fn remount_adding(dst: &Path, add: MsFlags) -> Result<(), String> {
    let have = nix::sys::statvfs::statvfs(dst)
        .map_err(err(format!("statfs {}", dst.display())))?
        .flags();
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | add;
    for (st, ms) in [
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // Not in nix's FsFlags for musl: Linux's statfs flag value.
        (FsFlags::from_bits_retain(ST_RELATIME), MsFlags::MS_RELATIME),
    ] {
        if have.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
        .map_err(err(format!("remount {} ({add:?})", dst.display())))
}

/// Binds the tree at `src` (with the mounts below it) on `dst`, every one of
/// them read-only and `nodev`. A remount applies to one mount only, so the
/// submounts (the host's cgroup v1 hierarchies under `/sys/fs/cgroup`) are
/// found in mountinfo and remounted one by one.
pub(super) fn bind_tree_read_only(src: &Path, dst: &Path) -> Result<(), String> {
    bind_device(src, dst)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(err("read mountinfo"))?;
    let prefix = dst.to_string_lossy().into_owned();
    for line in info.lines() {
        // Field 5 is the mount point, with space, tab, newline and backslash
        // written as octal escapes.
        let Some(point) = line.split(' ').nth(4).map(unescape_mountinfo) else {
            continue;
        };
        let under = point == prefix
            || point
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        if under {
            remount_adding(Path::new(&point), MsFlags::MS_RDONLY | MsFlags::MS_NODEV)?;
        }
    }
    Ok(())
}

fn unescape_mountinfo(field: &str) -> String {
    let mut out = Vec::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts the step's RUN `--mount`s (and `strata run -v` volumes) in `root`.
pub(super) fn setup_mounts(spec: &HelperSpec, root: &Path) -> Result<(), String> {
    let secrets = spec.state.join("secrets");
    for (i, m) in spec.step.mounts.iter().enumerate() {
        let target = root.join(rel_target(m.target())?);
        // /dev is the step's own tmpfs (`setup_dev`), mounted over the
        // stubs layer: a mount point in it (BuildKit's /dev/pipes for a
        // `#!` heredoc script) is made there.
        if target.starts_with(root.join("dev")) && std::fs::symlink_metadata(&target).is_err() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(err(parent.display()))?;
            }
            if m.is_file() {
                std::fs::File::create(&target).map_err(err(target.display()))?;
            } else {
                std::fs::create_dir(&target).map_err(err(target.display()))?;
            }
        }
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
                        MsFlags::MS_NODEV,
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
                // As the root: `nodev` only where no device filter decides
                // (BuildKit's RUN tmpfs is `rw,nosuid`).
                let flags = if spec.device_filter {
                    MsFlags::MS_NOSUID
                } else {
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV
                };
                mount(
                    Some("tmpfs"),
                    &target,
                    Some("tmpfs"),
                    flags,
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
            Mount::Ssh {
                socket,
                uid,
                gid,
                mode,
                ..
            } => {
                // The parent's forwarder socket (`forward_ssh_mounts`), not
                // the agent's own: given the mount's owner and mode here,
                // where the IDs are the step's.
                std::os::unix::fs::chown(socket, Some(*uid), Some(*gid))
                    .map_err(err("chown ssh socket"))?;
                std::fs::set_permissions(socket, std::fs::Permissions::from_mode(*mode & 0o7777))
                    .map_err(err("chmod ssh socket"))?;
                bind(socket, &target, false)?
            }
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
            Ok(_) => bind_device(Path::new("/dev/null"), &p)?,
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
