//! The step cgroups' tests (beside cgroup.rs to keep it short).

use super::*;

#[test]
fn finds_the_cgroup2_mount_on_hybrid_and_pure_v2_hosts() {
    let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
         36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices\n\
         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup2_mount(hybrid),
        Some(PathBuf::from("/sys/fs/cgroup/unified"))
    );
    let v2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
    assert_eq!(cgroup2_mount(v2), Some(PathBuf::from("/sys/fs/cgroup")));
    let spaced = "41 31 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
    assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/cg two")));
    assert_eq!(
        cgroup2_mount(&hybrid[..hybrid.find("41 ").unwrap_or(0)]),
        None
    );
}

/// The step cgroups of this machine, or a loud skip where it has none
/// (not root, or no writable cgroup2: then steps use the fallback).
fn filtered(test: &str) -> Option<&'static Path> {
    if !strata_testutil::require_root(test) {
        return None;
    }
    match support() {
        Support::Filter { parent } => Some(parent),
        Support::Unavailable(why) => {
            strata_testutil::skip(test, why);
            None
        }
    }
}

/// `sh -c script`, in `cgroup` when given; its status and stderr.
fn sh(script: &str, cgroup: Option<&StepCgroup>) -> (bool, String) {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]);
    if let Some(cg) = cgroup {
        cg.join_on_exec(&mut cmd);
    }
    let out = cmd.output().expect("run /bin/sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A node outside runc's list that exists on a mount allowing devices
/// (the host's `/dev/kmsg`, 1:11, on devtmpfs; a node the test makes on
/// a fresh tmpfs) opens outside the cgroup and not inside; the allowed
/// ones still do. Run on this machine's layout, so on a hybrid host it
/// shows that the program on the cgroup2 directory is enforced with the
/// v1 devices controller mounted.
#[test]
fn a_process_in_a_step_cgroup_opens_only_allowed_devices() {
    let test = "a_process_in_a_step_cgroup_opens_only_allowed_devices";
    let Some(_) = filtered(test) else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    // A tmpfs of our own, mounted without nodev, holding a made node:
    // the mount allows it, only the filter can refuse it.
    let devdir = tmp.path().join("dev");
    std::fs::create_dir(&devdir).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &devdir,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .expect("mount a tmpfs allowing devices");
    let made = devdir.join("kmsg");
    let node = nix::sys::stat::mknod(
        &made,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 11),
    );
    let cg = StepCgroup::for_step(Path::new("/scratch/step-devtest"), None)
        .expect("cgroup")
        .expect("supported");
    let mut checked = Vec::new();
    let opens: Vec<String> = ["/dev/kmsg".to_string(), made.display().to_string()]
        .into_iter()
        .collect();
    for node_path in &opens {
        let script = format!("exec 3< {node_path}");
        let (ok, err) = sh(&script, None);
        assert!(ok, "opening {node_path} outside the cgroup: {err}");
        let (ok, err) = sh(&script, Some(&cg));
        assert!(!ok, "{node_path} opened inside the step cgroup");
        assert!(err.contains("not permitted"), "{node_path}: {err}");
        checked.push(node_path.clone());
    }
    // And inside, what runc allows; mknod too (runc's "m" for all).
    let (ok, err) = sh(
        &format!(
            "echo x > /dev/null && head -c 1 /dev/zero >/dev/null && \
             head -c 1 /dev/urandom >/dev/null && mknod {}/loop b 7 0 && \
             grep -qx '0::/{}/{}' /proc/self/cgroup",
            devdir.display(),
            PARENT_DIR,
            cg.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        Some(&cg),
    );
    let _ = nix::mount::umount2(&devdir, nix::mount::MntFlags::MNT_DETACH);
    node.expect("mknod 1:11");
    assert!(ok, "allowed devices inside the step cgroup: {err}");
    assert_eq!(checked.len(), 2);
    let path = cg.path().to_path_buf();
    cg.finish();
    assert!(!path.exists(), "{} is left", path.display());
}

/// Killing a step's cgroup ends what left its process group, and the
/// cgroup is removed once empty.
#[test]
fn finish_kills_what_the_step_left_running() {
    let Some(_) = filtered("finish_kills_what_the_step_left_running") else {
        return;
    };
    let cg = StepCgroup::for_step(Path::new("/scratch/step-killtest"), None)
        .expect("cgroup")
        .expect("supported");
    let (ok, err) = sh("setsid sleep 1000 >/dev/null 2>&1 < /dev/null &", Some(&cg));
    assert!(ok, "{err}");
    let pids = cg.pids();
    assert_eq!(pids.len(), 1, "the backgrounded sleep: {pids:?}");
    let path = cg.path().to_path_buf();
    cg.finish();
    assert!(!path.exists(), "{} is left", path.display());
    assert!(
        !process_exists(pids[0]) || is_zombie(pids[0]),
        "sleep survived"
    );
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

/// An owner is a process: a live thread's id (which `kill(tid, 0)`
/// accepts) does not keep a dead owner's cgroup.
#[test]
fn a_thread_id_is_not_a_live_owner() {
    let me = std::process::id() as i32;
    assert!(process_exists(me));
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = tx.send(nix::unistd::gettid().as_raw());
        let _ = done_rx.recv();
    });
    let live_tid = rx.recv().expect("tid");
    assert!(
        !process_exists(live_tid),
        "thread {live_tid} read as a process"
    );
    let _ = done_tx.send(());
    t.join().expect("join");
}

/// A cgroup left by a process that is gone is removed by the sweep; a
/// live owner's is kept.
#[test]
fn stale_cgroups_of_dead_owners_are_swept() {
    let Some(parent) = filtered("stale_cgroups_of_dead_owners_are_swept") else {
        return;
    };
    // A pid that exited: a reaped child's.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let stale = parent.join(format!("{dead}-{}-step-stale", pid_namespace()));
    // Another PID namespace's is not ours to judge.
    let foreign = parent.join(format!("{dead}-ns1-step-foreign"));
    let _ = std::fs::create_dir(&foreign);
    let _ = std::fs::create_dir(&stale);
    let live = StepCgroup::for_step(Path::new("/scratch/step-live"), None)
        .expect("cgroup")
        .expect("supported");
    sweep_stale(parent);
    assert!(!stale.exists(), "{} was not swept", stale.display());
    assert!(foreign.exists(), "{} was swept", foreign.display());
    std::fs::remove_dir(&foreign).expect("remove the foreign cgroup");
    assert!(live.path().exists());
    let path = live.path().to_path_buf();
    live.finish();
    assert!(!path.exists());
}
