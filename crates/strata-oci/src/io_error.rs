//! An I/O error that says what was being done to which path: the shape the
//! blob store and the archive codec both report.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl IoError {
    /// For `map_err`: wraps an `io::Error` from doing `op` to `path`.
    pub fn at(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self { op, path, source }
    }
}
