//! Unpacking a layer tar into a snapshot directory, in this process. The
//! extractor is strata-oci's [`apply_layer`] (the one that is fuzzed); the
//! executor only supplies [`OverlayWhiteouts`], which keeps whiteouts as
//! overlayfs reads them instead of deleting, and checks the stream against
//! the layer's diffID.
//!
//! [`crate::snapshot::unpack_layer`] calls this directly when it may write
//! the owners itself, and through the rootless helper otherwise.

use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use strata_oci::apply::{WhiteoutHandler, apply_layer, remove_any};
use strata_oci::{Digest, DigestingReader};

use crate::error::UnpackError;
use crate::overlay::Mode;

/// The whiteout xattr of the empty-file form (`user.*`: no CAP_SYS_ADMIN
/// needed to set it).
const WHITEOUT_XATTR: &str = "user.overlay.whiteout";

/// Whiteouts as overlayfs lowerdirs hold them: a deleted path becomes a
/// `0:0` character device, an opaque directory gets the opaque xattr of
/// `mode`. Nothing below is removed: a snapshot holds one layer alone.
pub(crate) struct OverlayWhiteouts {
    mode: Mode,
    /// The snapshot's root, which is never marked opaque (there is nothing
    /// under it to hide, and overlayfs ignores the mark on a layer root).
    root: PathBuf,
}

impl OverlayWhiteouts {
    pub(crate) fn new(mode: Mode, root: &Path) -> Self {
        OverlayWhiteouts {
            mode,
            root: root.to_path_buf(),
        }
    }
}

/// Creates `dir` and its missing parents as plain 0755 directories (a later
/// directory entry of the layer sets their real metadata).
fn make_dirs(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
}

impl WhiteoutHandler for OverlayWhiteouts {
    fn whiteout(&mut self, target: &Path) -> io::Result<()> {
        if let Some(parent) = target.parent() {
            make_dirs(parent)?;
        }
        remove_any(target)?;
        match nix::sys::stat::mknod(
            target,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        ) {
            Ok(()) => Ok(()),
            // overlayfs (a store inside a container's own filesystem) refuses
            // to make a 0:0 device, and so may a device cgroup: the snapshot
            // gets the other form `is_whiteout` reads, an empty file with
            // the whiteout xattr. Only the copying paths read such a
            // snapshot: its filesystem cannot be an overlay upperdir.
            Err(nix::errno::Errno::EPERM) => {
                std::fs::File::create(target)?;
                xattr::set(target, WHITEOUT_XATTR, b"y")
            }
            Err(e) => Err(e.into()),
        }
    }

    fn opaque(&mut self, dir: &Path, _written: &dyn Fn(&Path) -> bool) -> io::Result<()> {
        make_dirs(dir)?;
        if dir != self.root {
            match xattr::set(dir, self.mode.opaque_xattr(), b"y") {
                // trusted.* needs CAP_SYS_ADMIN, which a container lacks;
                // `is_opaque` reads the user.* name too.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    xattr::set(dir, Mode::Rootless.opaque_xattr(), b"y")?
                }
                other => other?,
            }
        }
        Ok(())
    }
}

/// Unpacks the uncompressed layer tar `reader` into the existing directory
/// `dest` with overlay whiteouts for `mode`. The whole stream is read, also
/// past the tar's end marker, so that it can be checked against `diff_id`
/// (when the caller knows it) and so that a writer feeding it through a pipe
/// never sees the pipe close early.
pub(crate) fn unpack_into(
    reader: impl Read,
    dest: &Path,
    mode: Mode,
    diff_id: Option<&Digest>,
) -> Result<(), UnpackError> {
    let mut hashed = DigestingReader::new(reader);
    // Warnings (device nodes an unprivileged user namespace cannot create,
    // xattrs the filesystem refuses) only thin out the step's view of the
    // lower; the layer itself, and so the image, comes from the blob.
    apply_layer(&mut hashed, dest, &mut OverlayWhiteouts::new(mode, dest))?;
    io::copy(&mut hashed, &mut io::sink()).map_err(UnpackError::Read)?;
    let (_, actual, _) = hashed.finish();
    check_diff_id(diff_id, actual)
}

/// Whether the stream that was read is the layer the caller named.
pub(crate) fn check_diff_id(expected: Option<&Digest>, actual: Digest) -> Result<(), UnpackError> {
    match expected {
        Some(expected) if *expected != actual => Err(UnpackError::DiffIdMismatch {
            expected: *expected,
            actual,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tar::EntryType;

    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        kind: EntryType,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1);
        h.set_size(data.len() as u64);
        // Write the raw name so hostile paths reach the unpacker unfiltered.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).expect("link name");
        }
        h.set_cksum();
        b.append(&h, data).expect("append");
    }

    fn one_file_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "f", EntryType::Regular, None, b"data");
        b.into_inner().expect("tar")
    }

    #[test]
    fn dotdot_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "../escape", EntryType::Regular, None, b"x");
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        let dest = dir.path().join("d");
        std::fs::create_dir(&dest).expect("mkdir");
        assert!(unpack_into(&tar[..], &dest, Mode::current(), None).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    /// A symlink the layer made resolves inside the snapshot, as containerd's
    /// applier resolves it: the entry below it lands in the snapshot, never
    /// at the symlink's target on the host.
    #[test]
    fn symlink_parent_stays_inside() {
        let outside = tempfile::tempdir().expect("tmp");
        let mut b = tar::Builder::new(Vec::new());
        let target = outside.path().to_string_lossy().into_owned();
        entry(&mut b, "link", EntryType::Symlink, Some(&target), b"");
        entry(&mut b, "link/owned", EntryType::Regular, None, b"x");
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        unpack_into(&tar[..], dir.path(), Mode::current(), None).expect("unpack");
        assert!(!outside.path().join("owned").exists());
        let inside = dir
            .path()
            .join(outside.path().strip_prefix("/").expect("abs"));
        assert!(inside.join("owned").is_file());
    }

    #[test]
    fn diff_id_is_checked() {
        let tar = one_file_tar();
        let right = Digest::of(&tar);
        let dir = tempfile::tempdir().expect("tmp");
        unpack_into(&tar[..], dir.path(), Mode::current(), Some(&right)).expect("right diffID");

        let wrong = Digest::of(b"another layer");
        let dir = tempfile::tempdir().expect("tmp");
        match unpack_into(&tar[..], dir.path(), Mode::current(), Some(&wrong)) {
            Err(UnpackError::DiffIdMismatch { expected, actual }) => {
                assert_eq!((expected, actual), (wrong, right));
            }
            other => panic!("expected a diffID mismatch, got {other:?}"),
        }
    }

    /// The diffID covers the whole stream, including what follows the tar's
    /// end marker: a stream with extra bytes there is a different layer.
    #[test]
    fn diff_id_covers_trailing_bytes() {
        let tar = one_file_tar();
        let right = Digest::of(&tar);
        let mut longer = tar.clone();
        longer.extend_from_slice(&[0u8; 512]);
        let dir = tempfile::tempdir().expect("tmp");
        let err = unpack_into(&longer[..], dir.path(), Mode::current(), Some(&right))
            .expect_err("trailing bytes change the digest");
        assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    }

    #[test]
    fn whiteouts_links_and_modes() {
        if !nix::unistd::geteuid().is_root() {
            // mknod of whiteouts and trusted xattrs need root outside a userns.
            return;
        }
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "d/", EntryType::Directory, None, b"");
        entry(&mut b, "d/.wh..wh..opq", EntryType::Regular, None, b"");
        entry(&mut b, "d/.wh.gone", EntryType::Regular, None, b"");
        entry(&mut b, "e/.wh.gone", EntryType::Regular, None, b"");
        entry(&mut b, "d/f", EntryType::Regular, None, b"data");
        entry(&mut b, "d/hard", EntryType::Link, Some("d/f"), b"");
        entry(
            &mut b,
            "d/outside",
            EntryType::Link,
            Some("../../etc/passwd"),
            b"",
        );
        let tar = b.into_inner().expect("tar");
        let dir = tempfile::tempdir().expect("tmp");
        // The last link points outside: refused after the rest was written.
        assert!(unpack_into(&tar[..], dir.path(), Mode::Rootful, None).is_err());
        let d = dir.path().join("d");
        assert!(crate::overlay::is_opaque(&d));
        assert!(!crate::overlay::is_opaque(dir.path()));
        for gone in [d.join("gone"), dir.path().join("e/gone")] {
            let m = std::fs::symlink_metadata(&gone).expect("whiteout");
            assert!(crate::overlay::is_whiteout(&gone, &m), "{}", gone.display());
        }
        use std::os::unix::fs::MetadataExt;
        let (f, h) = (
            std::fs::metadata(d.join("f")).expect("f"),
            std::fs::metadata(d.join("hard")).expect("hard"),
        );
        assert_eq!(f.ino(), h.ino());
        assert_eq!(f.mode() & 0o7777, 0o755);
    }
}
