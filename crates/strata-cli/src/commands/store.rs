//! Where the store is, and opening it with errors that say what to change:
//! in a bare container or a CI job, `$HOME` may be unset or read-only, and
//! the way out is always `STRATA_ROOT`.

use std::path::PathBuf;

use anyhow::Context;
use strata_store::Store;

/// The store's root: [`Store::default_root`]'s rule (`$STRATA_ROOT`, else
/// `/var/lib/strata` for root, else `$XDG_DATA_HOME/strata` or
/// `~/.local/share/strata`), except that a user other than root with
/// neither `$HOME` nor `$XDG_DATA_HOME` is refused: the store would
/// otherwise land in `/tmp/.local/share/strata`, shared with every user of
/// the machine and gone at its next reboot.
pub(crate) fn store_root() -> anyhow::Result<PathBuf> {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    if !set("STRATA_ROOT") && !set("XDG_DATA_HOME") && !set("HOME") {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            anyhow::bail!(
                "no place for the store: strata runs as uid {uid} with neither $HOME nor \
                 $XDG_DATA_HOME set; set STRATA_ROOT to a directory this user can write \
                 (for example STRATA_ROOT=$PWD/.strata)"
            );
        }
    }
    Ok(Store::default_root())
}

/// Opens (creating if needed) the store at [`store_root`]. Where it cannot
/// be created or written (a read-only `$HOME`, a full disk), the error
/// names the directory and `STRATA_ROOT`.
pub(crate) fn open_store() -> anyhow::Result<Store> {
    let root = store_root()?;
    let opened = Store::open(&root);
    let unwritable = opened.as_ref().err().is_some_and(|e| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                return matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::StorageFull
                        | std::io::ErrorKind::QuotaExceeded
                );
            }
            cause = c.source();
        }
        false
    });
    opened.with_context(|| {
        if unwritable {
            format!(
                "cannot create or write the store at {}; set STRATA_ROOT to a writable \
                 directory with room for images",
                root.display()
            )
        } else {
            format!("opening the store at {}", root.display())
        }
    })
}
