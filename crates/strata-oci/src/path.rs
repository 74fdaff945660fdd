//! Resolving paths inside an image root without ever leaving it.
//!
//! Symlinks inside images and archives are hostile: `etc -> /` or
//! `x -> ../../..` must not let a write land on the host. [`secure_join`]
//! resolves every component of a path as if `root` were `/`: absolute symlink
//! targets restart at `root`, `..` never climbs above it. Used by the layer
//! applier, and by COPY and WORKDIR.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed in one resolution before giving up (Linux's own limit is 40).
const MAX_SYMLINKS: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("too many levels of symbolic links resolving {} in {}", path.display(), root.display())]
    Loop { root: PathBuf, path: PathBuf },
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Resolves `path` (absolute or relative, read as relative to `root`) to a
/// host path inside `root`, following symlinks (also a final one) as if
/// `root` were `/`. Components that do not exist are appended as they are.
pub fn secure_join(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    resolve(root, path, true)
}

/// Like [`secure_join`], but a final symlink is not followed: the result
/// names the link itself (what tar extraction replaces or an `lstat` wants).
pub fn secure_join_nofollow(root: &Path, path: &Path) -> Result<PathBuf, PathError> {
    resolve(root, path, false)
}

fn resolve(root: &Path, path: &Path, follow_last: bool) -> Result<PathBuf, PathError> {
    let mut todo: VecDeque<OsString> = normal_components(path).collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&done);
        candidate.push(&c);
        let is_last = todo.is_empty();
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => None,
            Err(e) => {
                return Err(PathError::Io {
                    path: candidate,
                    source: e,
                });
            }
        };
        match meta {
            Some(m) if m.file_type().is_symlink() && (follow_last || !is_last) => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(PathError::Loop {
                        root: root.to_owned(),
                        path: path.to_owned(),
                    });
                }
                let target = std::fs::read_link(&candidate).map_err(|e| PathError::Io {
                    path: candidate.clone(),
                    source: e,
                })?;
                if target.is_absolute() {
                    done.clear();
                }
                for (i, t) in normal_components(&target).enumerate() {
                    todo.insert(i, t);
                }
            }
            _ => done.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

/// The components of `p` without root, prefix or `.`; `..` is kept.
fn normal_components(p: &Path) -> impl Iterator<Item = OsString> + '_ {
    p.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Cleans an archive entry name into a relative path: leading `/` and `.`
/// components dropped. Returns None when a `..` component appears anywhere
/// (such names are refused, as Docker does, rather than reinterpreted).
pub fn clean_entry_name(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return None,
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_are_resolved_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("up")).unwrap();
        symlink("/etc/passwd", root.join("pw")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("abs/sub")).unwrap(),
            root.join("real/sub")
        );
        assert_eq!(
            secure_join(root, Path::new("/up/etc/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(root, Path::new("../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("pw")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join_nofollow(root, Path::new("pw")).unwrap(),
            root.join("pw")
        );
        assert!(matches!(
            secure_join(root, Path::new("loop")),
            Err(PathError::Loop { .. })
        ));
    }

    #[test]
    fn cleans_entry_names() {
        assert_eq!(
            clean_entry_name(Path::new("/./a/b/")),
            Some(PathBuf::from("a/b"))
        );
        assert_eq!(clean_entry_name(Path::new("a/../../etc")), None);
    }
}
