//! Privileges the step keeps: Docker's default capability set without
//! CAP_NET_RAW, and without CAP_MKNOD where no device filter guards it.

/// Docker's default capability set (CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, AUDIT_WRITE,
/// SETFCAP) minus two; everything else leaves the bounding set.
/// CAP_NET_RAW (13) would let a step forge packets on whatever network it
/// has (Podman dropped it by default in 4.0; ping keeps working through
/// `net.ipv4.ping_group_range`, which Docker 20.10 set for the same reason).
/// CAP_MKNOD (27): see [`CAP_MKNOD`].
const DEFAULT_CAPS: [u32; 12] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31];

/// Docker keeps CAP_MKNOD and stops device access with runc's device
/// cgroup; a step in a cgroup with strata's device filter (see
/// [`crate::cgroup`]) keeps it too. Without one, a step may not create
/// device nodes at all, and every writable mount is also `nodev`.
const CAP_MKNOD: u32 = 27;

/// Drops every capability outside [`DEFAULT_CAPS`] (plus [`CAP_MKNOD`] when
/// `keep_mknod`) from the bounding set and clears the ambient set.
pub(crate) fn drop_capabilities(keep_mknod: bool) -> Result<(), String> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        if DEFAULT_CAPS.contains(&cap) || (keep_mknod && cap == CAP_MKNOD) {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and no pointers.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: a capability this kernel does not know.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(format!("drop capability {cap}: {e}"));
            }
        }
    }
    // SAFETY: clears the ambient set; integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    Ok(())
}
