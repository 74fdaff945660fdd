//! The step's `/dev`: a tmpfs with the host's harmless device nodes bound
//! in (runc's default set: null, zero, full, random, urandom, tty, and ptmx
//! from a private devpts), and `/dev/shm`. Without the step cgroup's device
//! filter the tmpfs itself is `nodev`, so a node made in `/dev` by other
//! means cannot be opened; with it, the filter decides, as on Docker's
//! `/dev`. The bound nodes are mounts of their own and keep the host's
//! flags.

use std::path::Path;

use nix::mount::{MsFlags, mount};

use super::context::err;
use super::mounts::bind_device;

/// Mounts and fills `root/dev`; `shm_size` in bytes (default 64 MiB), or
/// `None` for the outer: `/dev/shm` is left an empty mount point when the
/// step mounts a tmpfs of its own there (one mount, as runc's spec keeps
/// one per destination). `filtered`: the step runs under the device filter.
pub(super) fn setup_dev(
    root: &Path,
    shm_size: Option<Option<u64>>,
    filtered: bool,
) -> Result<(), String> {
    let dev = root.join("dev");
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME;
    if !filtered {
        flags |= MsFlags::MS_NODEV;
    }
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=65536k"),
    )
    .map_err(err("mount /dev"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        std::fs::File::create(&target).map_err(err(target.display()))?;
        bind_device(&Path::new("/dev").join(node), &target)?;
    }
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).map_err(err("mkdir /dev/pts"))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(err("mount /dev/pts"))?;
    std::os::unix::fs::symlink("pts/ptmx", dev.join("ptmx")).map_err(err("/dev/ptmx"))?;
    let shm = dev.join("shm");
    std::fs::create_dir(&shm).map_err(err("mkdir /dev/shm"))?;
    if let Some(shm_size) = shm_size {
        let shm_opts = format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20));
        mount(
            Some("shm"),
            &shm,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some(shm_opts.as_str()),
        )
        .map_err(err("mount /dev/shm"))?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(name)).map_err(err(format!("/dev/{name}")))?;
    }
    Ok(())
}
