//! The step's root filesystem, built inside the helper's mount namespace:
//! the stubs layer (mount points the image lacks), then overlayfs over the
//! lowers, or where overlayfs cannot be mounted, a flattened copy.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};

use super::context::err;
use crate::overlay::{self, Mode};
use crate::protocol::{HelperSpec, RUNTIME_DIRS, STUBS_FILE, Stub, StubKind, provided_files};
use crate::spec::SnapshotMethod;

/// Builds the step's root at `state/merged` and returns that path. `method`
/// and `fallback_reason` say how, for the result file (set as soon as known,
/// so a later failure still reports them).
pub(super) fn prepare(
    spec: &HelperSpec,
    method: &mut Option<SnapshotMethod>,
    fallback_reason: &mut Option<String>,
) -> Result<PathBuf, String> {
    let state = &spec.state;
    let stubs = stub_list(spec)?;
    let stub_dir = state.join("s");
    make_stub_layer(&stub_dir, &spec.step.lowers, &stubs)?;
    std::fs::write(
        state.join(STUBS_FILE),
        serde_json::to_vec(&stubs).map_err(err("stubs"))?,
    )
    .map_err(err("write stubs list"))?;

    let merged = state.join("merged");
    let upper = state.join("upper");
    std::fs::create_dir_all(&merged).map_err(err(merged.display()))?;
    let overlay = if spec.force_copy {
        Err("forced by the caller".to_string())
    } else {
        mount_overlay(spec, &stub_dir, &merged)
    };
    match overlay {
        Ok(()) => *method = Some(SnapshotMethod::Overlay),
        Err(reason) => {
            *method = Some(SnapshotMethod::Copy);
            *fallback_reason = Some(reason);
            // Start the fallback from scratch: the overlay attempt may have
            // left an empty upperdir behind.
            let _ = std::fs::remove_dir_all(&upper);
            std::fs::create_dir_all(&upper).map_err(err(upper.display()))?;
            for lower in spec.step.lowers.iter().rev() {
                crate::flatten::apply_lower(lower, &upper)
                    .map_err(err(format!("copy {}", lower.display())))?;
            }
            crate::flatten::apply_lower(&stub_dir, &upper).map_err(err("copy mount stubs"))?;
            mount(
                Some(&upper),
                &merged,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(err("bind the copied root"))?;
        }
    }
    touch_stub_parents(&merged, &spec.step.lowers, &stubs);
    // Without the step cgroup's device filter, device nodes in the image or
    // made by the step must never be openable (see caps.rs); with it, the
    // filter decides, as runc's does for Docker.
    if !spec.device_filter {
        super::mounts::remount_adding(&merged, MsFlags::MS_NODEV)?;
    }

    Ok(merged)
}

fn stub_list(spec: &HelperSpec) -> Result<Vec<Stub>, String> {
    let mut stubs: Vec<Stub> = RUNTIME_DIRS
        .iter()
        .map(|p| Stub {
            path: PathBuf::from(p),
            dir: true,
            kind: StubKind::Runtime,
        })
        .chain(
            provided_files(&spec.step)
                .iter()
                .map(|p| Stub::for_provided_file(p)),
        )
        .collect();
    for m in &spec.step.mounts {
        stubs.push(Stub::for_mount(m)?);
    }
    Ok(stubs)
}

/// Gives each directory a stub touches ([`Stub::touched_parent`]) the
/// current time as its mtime in the step's root, as making the stub there
/// gives it in BuildKit's (strata's stubs are in a layer of their own).
/// Where the step's root may not set it (an owner the rootless user
/// namespace does not map), the directory stays as it was: the mtime is
/// all that is at stake, not worth failing the step for.
fn touch_stub_parents(merged: &Path, lowers: &[PathBuf], stubs: &[Stub]) {
    use nix::sys::{stat, time::TimeSpec};
    for dir in stubs.iter().filter_map(|s| s.touched_parent(lowers)) {
        let _ = stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &merged.join(dir),
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::UTIME_NOW,
            stat::UtimensatFlags::NoFollowSymlink,
        );
    }
}

/// Creates the stubs layer: each stub and its parent directories as real
/// directories (so no mount ever follows an image symlink), with the parents'
/// mode and ownership copied from the image so the merged view is unchanged.
fn make_stub_layer(dir: &Path, lowers: &[PathBuf], stubs: &[Stub]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(err(dir.display()))?;
    // Entries standing for the image's own, given its metadata once every
    // stub is made: making an entry in a directory changes its mtime.
    let mut from_image = Vec::new();
    for stub in stubs {
        let mut rel = PathBuf::new();
        let comps: Vec<_> = stub.path.components().collect();
        for (i, c) in comps.iter().enumerate() {
            rel.push(c);
            let on_disk = dir.join(&rel);
            let last = i + 1 == comps.len();
            if std::fs::symlink_metadata(&on_disk).is_ok() {
                continue;
            }
            let image = overlay::lookup(lowers, &rel);
            if last && !stub.dir {
                std::fs::File::create(&on_disk).map_err(err(on_disk.display()))?;
            } else {
                std::fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&on_disk)
                    .map_err(err(on_disk.display()))?;
            }
            if let Some(found) = image.filter(|f| f.meta.is_dir() == (!last || stub.dir)) {
                from_image.push((on_disk, found));
            }
        }
    }
    // Owner, mode, xattrs and times of the image's own entry, so the merged
    // view (and anything copied up from it) is unchanged.
    for (on_disk, found) in from_image {
        crate::flatten::copy_metadata(&found.path, &on_disk, &found.meta)
            .map_err(err(on_disk.display()))?;
    }
    Ok(())
}

/// Mounts the overlay. Lowers are reached through one-character symlinks in
/// `state/l` with the helper's working directory there, so the `lowerdir=`
/// option (limited to a page) stays short for hundreds of layers.
/// Lowers passed to overlayfs besides the stubs layer.
const MAX_LOWERS: usize = 498;

fn mount_overlay(spec: &HelperSpec, stub_dir: &Path, merged: &Path) -> Result<(), String> {
    let state = &spec.state;
    let links = state.join("l");
    std::fs::create_dir_all(&links).map_err(err(links.display()))?;
    std::fs::create_dir_all(state.join("upper")).map_err(err("upper"))?;
    std::fs::create_dir_all(state.join("work")).map_err(err("work"))?;
    let mut names = vec!["s".to_string()];
    std::os::unix::fs::symlink(stub_dir, links.join("s")).map_err(err("link stubs"))?;
    // The kernel stacks at most 500 layers (OVL_MAX_STACK); the stubs take
    // one. Deeper images get their bottom layers flattened into one
    // directory (a copy, in the step's scratch space).
    let mut lowers: Vec<PathBuf> = spec.step.lowers.clone();
    if lowers.len() > MAX_LOWERS {
        let flat = state.join("flat");
        std::fs::create_dir_all(&flat).map_err(err(flat.display()))?;
        for lower in lowers[MAX_LOWERS - 1..].iter().rev() {
            crate::flatten::apply_lower(lower, &flat)
                .map_err(err(format!("flatten {}", lower.display())))?;
        }
        lowers.truncate(MAX_LOWERS - 1);
        lowers.push(flat);
    }
    for (i, lower) in lowers.iter().enumerate() {
        let name = format!("{i:x}");
        std::os::unix::fs::symlink(lower, links.join(&name))
            .map_err(err(format!("link {}", lower.display())))?;
        names.push(name);
    }
    let mut data = format!(
        "lowerdir={},upperdir=../upper,workdir=../work",
        names.join(":")
    );
    match spec.mode {
        Mode::Rootless => data.push_str(",userxattr"),
        // The differ reads whole files from the upperdir and treats
        // directories as merged: no metadata-only copy-ups or redirects.
        Mode::Rootful => data.push_str(",index=off,metacopy=off,redirect_dir=off"),
    }
    if data.len() >= 4000 {
        return Err(format!(
            "{} layers exceed the overlay option size",
            spec.step.lowers.len()
        ));
    }
    let cwd = std::env::current_dir().map_err(err("getcwd"))?;
    std::env::set_current_dir(&links).map_err(err(links.display()))?;
    let res = mount(
        Some("overlay"),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    );
    std::env::set_current_dir(cwd).map_err(err("chdir back"))?;
    res.map_err(err("mount overlay"))
}
