//! Unpacked layers ("snapshots") as overlayfs lowerdirs: making one from a
//! layer tar and removing one, from the parent process. Rootless, both run
//! in a helper inside a user namespace (with the `/etc/subuid` ranges when
//! present) so files keep their owners and can be removed again.
//!
//! The overlay rules themselves (whiteouts, opaque directories, looking a
//! path up through lowers) live in `overlay.rs` and are re-exported here.

use std::io::Read;
use std::path::Path;

use strata_oci::{Digest, DigestingReader};

use crate::error::{ExecError, UnpackError};
use crate::extract;
use crate::launch::run_task_rootless;
use crate::protocol::{TASK_REMOVE, TASK_UNPACK};

pub use crate::overlay::{Found, Mode, is_opaque, is_whiteout, lookup};

/// Unpacks an uncompressed layer tar into the fresh directory `dir` with
/// overlay-style whiteouts for `mode`. Rootless, when this process is not
/// root, the work happens in a helper inside a user namespace so files keep
/// their owners. Like [`unpack_layer_verified`] without a diffID to check.
pub fn unpack_layer(reader: impl Read, dir: &Path, mode: Mode) -> Result<(), ExecError> {
    unpack_layer_verified(reader, dir, mode, None)
}

/// [`unpack_layer`], also checking that the uncompressed stream's sha256 is
/// `diff_id` when the caller knows it. On a mismatch
/// ([`UnpackError::DiffIdMismatch`]) `dir` holds the wrong content: the
/// caller must not use it as the layer's snapshot.
pub fn unpack_layer_verified(
    reader: impl Read,
    dir: &Path,
    mode: Mode,
    diff_id: Option<&Digest>,
) -> Result<(), ExecError> {
    let fail = |source| ExecError::Unpack {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(UnpackError::Create(e)))?;
    if mode == Mode::Rootless && !nix::unistd::geteuid().is_root() {
        // The helper reads the stream to its end; hashing it on the way
        // there checks what it unpacked.
        let mut hashed = DigestingReader::new(reader);
        run_task_rootless(TASK_UNPACK, dir, Some(&mut hashed))
            .map_err(|e| fail(UnpackError::Rootless(Box::new(e))))?;
        let (_, actual, _) = hashed.finish();
        return extract::check_diff_id(diff_id, actual).map_err(fail);
    }
    extract::unpack_into(reader, dir, mode, diff_id).map_err(fail)
}

/// Removes a snapshot or other tree the executor wrote. Rootless, files owned
/// by subordinate IDs can only be removed from inside the user namespace.
pub fn remove_tree(dir: &Path) -> Result<(), ExecError> {
    if !nix::unistd::geteuid().is_root() {
        return run_task_rootless(TASK_REMOVE, dir, None);
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(ExecError::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}
