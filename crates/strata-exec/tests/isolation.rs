//! The isolation a RUN step (and `strata run`) gets, checked from inside real
//! steps on the busybox base, as root and rootless (STRATA_TEST_USER through
//! `runuser`): no raw host devices, no host loopback services, no writable
//! host sysfs, `/proc/sys` read-only, `mount`/`unshare`/`insmod` refused,
//! and the capabilities a step keeps.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;

use strata_exec::{Network, RunSpec};

/// A step running `script` with busybox's applets all on PATH.
fn step(
    fx: &common::Fixture,
    script: &str,
) -> (RunSpec, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    let (mut spec, out) = fx.spec(script);
    spec.env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()];
    (spec, out)
}

/// `major minor` of a block device the test process can open on the host
/// (so reading it from a step is a real escape, not a missing device).
fn readable_host_block_device() -> Option<(u32, u32)> {
    for entry in std::fs::read_dir("/sys/class/block").ok()?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) else {
            continue;
        };
        let Some((maj, min)) = dev.trim().split_once(':') else {
            continue;
        };
        let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else {
            continue;
        };
        if std::fs::File::open(format!("/dev/{name}")).is_ok() {
            return Some((maj, min));
        }
    }
    None
}

/// The shell that tries a device node in `dir`: prints `OPENED <what>` when
/// the node could be read. mknod may be refused; that is also a pass.
fn try_device(dir: &str, what: &str, kind: char, maj: u32, min: u32) -> String {
    format!(
        "mknod {dir}/{what} {kind} {maj} {min} 2>/dev/null; \
         dd if={dir}/{what} of=/dev/null bs=8192 count=1 2>/dev/null && echo OPENED {what}; \
         rm -f {dir}/{what}; "
    )
}

both!(no_raw_devices, no_raw_devices_rootless, |fx| {
    // /dev/kmsg (the host's kernel log) always exists; a block device only
    // when the host has one the test can open.
    let mut script = String::new();
    let mut devices = vec![('c', 1, 11)];
    devices.extend(readable_host_block_device().map(|(a, b)| ('b', a, b)));
    for (kind, maj, min) in devices {
        for dir in ["/tmp", "/dev", "/dev/shm", "/cache"] {
            let what = format!("{}{kind}{maj}_{min}", dir.replace('/', "_"));
            script.push_str(&try_device(dir, &what, kind, maj, min));
        }
    }
    // What a step must still have.
    script.push_str(
        "echo x > /dev/null && head -c 3 /dev/zero | wc -c && head -c 5 /dev/urandom | wc -c \
         && head -c 2 /dev/random | wc -c && (echo y > /dev/full) 2>/dev/null || echo full-is-full; \
         test -c /dev/tty && test -e /dev/ptmx && test -d /dev/pts && echo tty-ptmx-pts",
    );
    let cache = fx.tmp.path().join("cache-dir");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let (mut spec, out) = step(fx, &script);
    spec.mounts = vec![strata_exec::Mount::Cache {
        target: "/cache".into(),
        dir: cache,
        sharing: strata_exec::CacheSharing::Shared,
        readonly: false,
        uid: 0,
        gid: 0,
        mode: 0o755,
    }];
    let (_, text) = fx.finish(spec, out);
    assert_eq!(text, "3\n5\n2\nfull-is-full\ntty-ptmx-pts\n", "{script}");
});

both!(
    devices_in_strata_run_volumes,
    devices_in_strata_run_volumes_rootless,
    |fx| {
        // A volume (`strata run -v`) holding a device node the host made: the
        // step must not open it through the volume either.
        if !nix::unistd::geteuid().is_root() {
            // Rootless cannot create the node on the host side; the rootful
            // twin covers volumes, and the mknod test covers rootless steps.
            let (spec, out) = step(fx, "echo ok");
            assert_eq!(fx.finish(spec, out).1, "ok\n");
            return;
        }
        let vol = fx.tmp.path().join("vol");
        std::fs::create_dir_all(&vol).expect("volume");
        nix::sys::stat::mknod(
            &vol.join("kmsg"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(1, 11),
        )
        .expect("mknod on the host");
        let (mut spec, out) = step(
            fx,
            "dd if=/vol/kmsg of=/dev/null bs=8192 count=1 2>/dev/null && echo OPENED; echo done",
        );
        spec.mounts = vec![strata_exec::Mount::Volume {
            target: "/vol".into(),
            source: vol,
            readonly: false,
        }];
        assert_eq!(fx.finish(spec, out).1, "done\n");
    }
);

/// Whether an unprivileged user can open the tun device pasta needs.
fn tun_open_to_all() -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(strata_exec::network::TUN_DEVICE)
        .is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006)
}

/// What the rootless twin of a default-network test lacks, if anything: a
/// tun device the test user may open (mode 0666, as udev makes it; a host
/// without udev leaves it 0600).
fn no_tun_for_the_test_user() -> Option<&'static str> {
    (nix::unistd::geteuid().is_root() && !tun_open_to_all())
        .then_some("/dev/net/tun is not open to unprivileged users (chmod 0666 it, as udev does)")
}

/// [`both!`] for the default network: the rootless twin needs a tun device
/// the test user may open, and says so loudly when there is none.
macro_rules! net_both {
    ($name:ident, $rootless:ident, $body:expr) => {
        both!($name, $rootless, rootless_needs: no_tun_for_the_test_user, $body);
    };
}

/// Serves one HTTP answer per connection on the host's 127.0.0.1 until the
/// listener is dropped with the test.
fn host_loopback_service() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhost-secret",
            );
        }
    });
    port
}

net_both!(
    host_loopback_services_unreachable,
    host_loopback_services_unreachable_rootless,
    |fx| {
        if strata_exec::sandbox_network_helper().is_none() {
            strata_testutil::skip(
                "host_loopback_services_unreachable",
                "pasta is not installed or cannot open /dev/net/tun: the default network is the host's",
            );
            return;
        }
        let port = host_loopback_service();
        // (busybox's static wget crashes here; nc speaks the HTTP.)
        let fetch = format!(
            "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 127.0.0.1 {port} 2>/dev/null \
             | tail -c 11 | grep . || echo unreachable"
        );
        // The default network: a namespace of the step's own.
        let (spec, out) = step(fx, &fetch);
        let mut spec = spec;
        spec.network = Network::Sandbox;
        assert_eq!(fx.finish(spec, out).1, "unreachable\n");
        // The explicit opt-in reaches it.
        let (mut spec, out) = step(fx, &fetch);
        spec.network = Network::Host;
        assert_eq!(fx.finish(spec, out).1, "host-secret\n");
    }
);

net_both!(
    default_network_has_a_route_out,
    default_network_has_a_route_out_rootless,
    |fx| {
        if strata_exec::sandbox_network_helper().is_none() {
            strata_testutil::skip(
                "default_network_has_a_route_out",
                "pasta is not installed or cannot open /dev/net/tun: the default network is the host's",
            );
            return;
        }
        // pasta's interface is up with a default route; ping works without
        // CAP_NET_RAW (ping_group_range starts at group 0, where the
        // kernel's default "1 0" allows no group).
        let (mut spec, out) = step(
            fx,
            "awk '$2 == \"00000000\" { print \"default-route\"; exit }' /proc/net/route; \
             tr -s '\\t ' ' ' < /proc/sys/net/ipv4/ping_group_range",
        );
        spec.network = Network::Sandbox;
        let text = fx.finish(spec, out).1;
        assert!(text.contains("default-route\n"), "{text}");
        let range = text.lines().last().unwrap_or_default();
        assert!(range.starts_with("0 ") && range != "0 0", "{text}");
        if nix::unistd::geteuid().is_root() {
            assert_eq!(range, "0 2147483647");
        }
    }
);

/// Checks from inside a step on `network`: each line the script prints is
/// one guarantee that held.
fn kernel_interfaces_script() -> &'static str {
    "grep ' /sys ' /proc/mounts | grep -q '[ ,]ro[ ,]' && echo sys-ro; \
     (touch /sys/kernel/strata-probe) 2>/dev/null || echo sys-unwritable; \
     found=; for d in $(awk '$2 ~ \"^/sys/\" { print $2 }' /proc/mounts); do \
       (mkdir $d/strata-probe && rmdir $d/strata-probe) 2>/dev/null && found=\"$found $d\"; \
       grep \" $d \" /proc/mounts | grep -q '[ ,]ro[ ,]' || found=\"$found $d(rw)\"; done; \
     test -z \"$found\" && echo sys-submounts-ro || echo \"writable:$found\"; \
     (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null || echo procsys-ro; \
     (echo 1 > /proc/sysrq-trigger) 2>/dev/null || echo sysrq-ro; \
     mkdir -p /mnt/t; mount -t tmpfs none /mnt/t 2>/dev/null && echo MOUNTED || echo mount-refused; \
     unshare -n true 2>/dev/null && echo UNSHARED || echo unshare-refused; \
     unshare -U true 2>/dev/null && echo USERNS || echo userns-refused; \
     printf '\\177ELF' > /tmp/m.ko; insmod /tmp/m.ko 2>&1 | grep -q 'Operation not permitted' && echo insmod-refused; \
     awk '/^CapBnd/ { print $2 }' /proc/self/status"
}

/// Capability numbers in a `CapBnd` hex mask.
fn caps(mask: &str) -> Vec<u32> {
    let bits = u64::from_str_radix(mask.trim(), 16).expect("hex capability mask");
    (0..64).filter(|b| bits & (1 << b) != 0).collect()
}

fn check_kernel_interfaces(fx: &common::Fixture, network: Network) {
    let (mut spec, out) = step(fx, kernel_interfaces_script());
    spec.network = network;
    let text = fx.finish(spec, out).1;
    let (checks, mask) = text.trim_end().rsplit_once('\n').expect("lines");
    assert_eq!(
        checks,
        "sys-ro\nsys-unwritable\nsys-submounts-ro\nprocsys-ro\nsysrq-ro\nmount-refused\n\
         unshare-refused\nuserns-refused\ninsmod-refused",
        "{network:?}"
    );
    // Docker's default set minus CAP_NET_RAW (13): CHOWN DAC_OVERRIDE
    // FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT
    // AUDIT_WRITE SETFCAP, and MKNOD (27) only where the step cgroup's
    // device filter guards it.
    let mut want = vec![0, 1, 3, 4, 5, 6, 7, 8, 10, 18, 29, 31];
    if device_filter() {
        want.push(27);
        want.sort_unstable();
    }
    assert_eq!(caps(mask), want, "{network:?}");
}

/// Whether steps here run in a cgroup with the device filter (root with a
/// writable cgroup2), or the fallback (no CAP_MKNOD, nodev mounts).
fn device_filter() -> bool {
    matches!(
        strata_exec::cgroup::support(),
        strata_exec::cgroup::Support::Filter { .. }
    )
}

/// With the device filter, a step is where Docker's is: it may mknod, and
/// its root and /dev allow device nodes, so the filter alone keeps it from
/// a node outside runc's list: one the image holds (made by the test in the
/// lower layer), one the step makes, and the host's own through /dev's
/// bound nodes. The step names its cgroup in /proc/self/cgroup, and the
/// cgroup is gone once the step is.
#[test]
fn a_step_in_its_cgroup_opens_only_runcs_devices() {
    let test = "a_step_in_its_cgroup_opens_only_runcs_devices";
    if !strata_testutil::require_root(test) {
        return;
    }
    let Some(fx) = common::Fixture::new(test) else {
        return;
    };
    let strata_exec::cgroup::Support::Filter { parent } = strata_exec::cgroup::support() else {
        let strata_exec::cgroup::Support::Unavailable(why) = strata_exec::cgroup::support() else {
            return;
        };
        strata_testutil::skip(test, why);
        return;
    };
    let image = fx.tmp.path().join("snapshots").join("devices");
    std::fs::create_dir_all(image.join("nodes")).expect("layer dir");
    nix::sys::stat::mknod(
        &image.join("nodes/kmsg"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        nix::sys::stat::makedev(1, 11),
    )
    .expect("mknod in the lower layer");
    // Outside any step, the node opens (the test's temp dir allows devices).
    std::fs::File::open(image.join("nodes/kmsg")).expect("the node opens outside the step");
    let script = "grep ^0:: /proc/self/cgroup; \
         (exec 3< /nodes/kmsg) 2>/dev/null && echo OPENED image-node; \
         mknod /tmp/kmsg c 1 11 && echo made; \
         (exec 3< /tmp/kmsg) 2>/dev/null && echo OPENED step-node; \
         mknod /dev/loop-x b 7 0 && (exec 3< /dev/loop-x) 2>/dev/null && echo OPENED loop; \
         echo x > /dev/null && head -c 2 /dev/urandom | wc -c";
    let (mut spec, out) = fx.spec_on(vec![image, fx.base.clone()], script);
    spec.env = vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()];
    let (_, text) = fx.finish(spec, out);
    let mut lines = text.lines();
    let cgroup_line = lines.next().unwrap_or_default().to_string();
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest, vec!["made", "2"], "{text}");
    let prefix = format!("0::/strata/{}-ns", std::process::id());
    assert!(
        cgroup_line.starts_with(&prefix) && cgroup_line.contains("-step-"),
        "the step's /proc/self/cgroup: {cgroup_line:?}, want {prefix}…"
    );
    let name = cgroup_line.trim_start_matches("0::/strata/");
    assert!(
        !parent.join(name).exists(),
        "the step's cgroup {name} is left after it"
    );
}

both!(kernel_interfaces, kernel_interfaces_rootless, |fx| {
    for network in [Network::Sandbox, Network::None, Network::Host] {
        check_kernel_interfaces(fx, network);
    }
});

both!(secrets_in_no_layer, secrets_in_no_layer_rootless, |fx| {
    let (mut spec, out) = step(
        fx,
        "cat /run/secrets/token; cp /run/secrets/token /copied 2>/dev/null; echo",
    );
    spec.mounts = vec![strata_exec::Mount::Secret {
        target: "/run/secrets/token".into(),
        data: b"s3cr3t-value".to_vec(),
        uid: 0,
        gid: 0,
        mode: 0o400,
    }];
    let (r, text) = fx.finish(spec, out);
    assert_eq!(text, "s3cr3t-value\n");
    let changes = r.upper.changes().expect("changes");
    let paths = common::paths(&changes);
    // The secret's mount point is not layer content; only the copy the step
    // chose to make is.
    assert_eq!(paths, vec!["copied".to_string()], "{paths:?}");
});
