//! A full disk during a RUN step is reported as such, naming the path
//! (issue #14: it read "result.json: EOF while parsing a value").

mod common;

use strata_exec::ExecError;

/// Unmounts the tmpfs at the path when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn full_scratch_disk_says_no_space_left() {
    if !strata_testutil::require_root("full_scratch_disk_says_no_space_left") {
        return;
    }
    let Some(fx) = common::Fixture::new("full_scratch_disk_says_no_space_left") else {
        return;
    };
    // A small filesystem for the step's scratch (upperdir and result).
    let small = fx.tmp.path().join("small");
    std::fs::create_dir_all(&small).expect("mount point");
    nix::mount::mount(
        Some("tmpfs"),
        &small,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=4m"),
    )
    .expect("mount a 4 MiB tmpfs");
    let _unmount = Unmount(small.clone());
    let (mut spec, _) = fx.spec("dd if=/dev/zero of=/fill bs=64k 2>/dev/null; true");
    spec.scratch_dir = small.clone();
    let err = match strata_exec::run(spec) {
        Err(ExecError::Helper(m)) => m,
        other => panic!("expected the helper's report, got {other:?}"),
    };
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("result.json"), "{err}");
    let left: Vec<_> = std::fs::read_dir(&small).expect("scratch").collect();
    assert!(left.is_empty(), "the step's scratch is removed: {left:?}");
}
