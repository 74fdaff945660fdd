//! The checks a layer tar passes before it is accepted into a store (by
//! `load` or an archive read): every entry is read, and refused for the
//! reasons [`crate::apply::apply_layer`] would refuse it later, so that an
//! image that was stored can also be unpacked. Nothing is written to disk.
//!
//! Refused, as the applier refuses them: an unreadable or truncated tar, a
//! name with a `..` component, a whiteout naming no file (`.wh.`, `.wh..`),
//! a hard link whose target has a `..` component or is the layer's root, and
//! a mode or mtime field that is neither a number nor empty.

use std::io::{self, Read};
use std::path::Path;

use crate::layer::{OPAQUE_WHITEOUT, WHITEOUT_PREFIX};
use crate::path::clean_entry_name;

/// Why a layer's entries cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("reading the layer tar")]
    Tar(#[source] io::Error),
    #[error("layer entry {name:?} escapes the destination")]
    Escapes { name: String },
    #[error("layer entry {name:?} is a whiteout that names no file")]
    BadWhiteout { name: String },
    #[error("layer entry {name:?} is a hard link to {target:?}, which is not in the layer")]
    BadHardlink { name: String, target: String },
    #[error("layer entry {name:?} has an unreadable {field} field")]
    BadField {
        name: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Reads the uncompressed layer tar `r` up to its end-of-archive marker,
/// checking every entry (see the module docs).
pub fn check_layer_entries(r: impl Read) -> Result<(), EntryError> {
    let mut ar = tar::Archive::new(r);
    for entry in ar.entries().map_err(EntryError::Tar)? {
        let mut entry = entry.map_err(EntryError::Tar)?;
        let raw = entry.path().map_err(EntryError::Tar)?.into_owned();
        let name = raw.to_string_lossy().into_owned();
        let rel =
            clean_entry_name(&raw).ok_or_else(|| EntryError::Escapes { name: name.clone() })?;
        let header = entry.header();
        let field = |field, parsed: io::Result<u64>, raw: &[u8]| match parsed {
            Ok(_) => Ok(()),
            // Empty (all NULs or spaces) reads as 0, as Go's archive/tar has it.
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(()),
            Err(source) => Err(EntryError::BadField {
                name: name.clone(),
                field,
                source,
            }),
        };
        field("mode", header.mode().map(u64::from), &header.as_old().mode)?;
        field("mtime", header.mtime(), &header.as_old().mtime)?;
        let base = rel
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        if base != OPAQUE_WHITEOUT
            && let Some(hidden) = base.strip_prefix(WHITEOUT_PREFIX)
            && (hidden.is_empty() || hidden == "." || hidden == "..")
        {
            return Err(EntryError::BadWhiteout { name });
        }
        if header.entry_type() == tar::EntryType::Link {
            let target = entry
                .link_name()
                .map_err(EntryError::Tar)?
                .unwrap_or_default()
                .into_owned();
            let inside = clean_entry_name(&target).is_some_and(|t| t != Path::new(""));
            if !inside {
                return Err(EntryError::BadHardlink {
                    name,
                    target: target.to_string_lossy().into_owned(),
                });
            }
        }
        // PAX extensions the applier reads (xattrs) must parse.
        if let Some(exts) = entry.pax_extensions().map_err(EntryError::Tar)? {
            for ext in exts {
                ext.map_err(EntryError::Tar)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar of one entry, its name and link target written into the
    /// header as given (the tar crate's builder refuses `..`).
    fn tar_of(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend([0u8; 1024]);
        out
    }

    #[test]
    fn entries_the_applier_refuses_are_refused() {
        use tar::EntryType::{Link, Regular};
        let ok = |name, kind, link| check_layer_entries(&tar_of(name, kind, link)[..]);
        assert!(ok("a/b", Regular, "").is_ok());
        assert!(ok("a/.wh..wh..opq", Regular, "").is_ok());
        assert!(ok("a/.wh.gone", Regular, "").is_ok());
        assert!(ok("c", Link, "a/b").is_ok());
        assert!(matches!(
            ok("../evil", Regular, ""),
            Err(EntryError::Escapes { .. })
        ));
        assert!(matches!(
            ok("a/.wh.", Regular, ""),
            Err(EntryError::BadWhiteout { .. })
        ));
        assert!(matches!(
            ok("c", Link, "../../etc/passwd"),
            Err(EntryError::BadHardlink { target, .. }) if target == "../../etc/passwd"
        ));
        assert!(matches!(
            ok("c", Link, "/"),
            Err(EntryError::BadHardlink { .. })
        ));
    }

    #[test]
    fn a_truncated_tar_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(600);
        h.set_mode(0o644);
        b.append_data(&mut h, "f", &[7u8; 600][..]).unwrap();
        let full = b.into_inner().unwrap();
        assert!(check_layer_entries(&full[..]).is_ok());
        assert!(matches!(
            check_layer_entries(&full[..700]),
            Err(EntryError::Tar(_))
        ));
    }
}
