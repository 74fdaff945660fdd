//! The one error type of bake definitions: what failed, and in which file
//! or target.

/// A bake definition that cannot be read or resolved.
#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid HCL, JSON or compose YAML.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// The definition is well-formed but wrong (an unknown target, a cycle,
    /// a bad value).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = BakeError> = std::result::Result<T, E>;

pub(crate) fn invalid(message: impl Into<String>) -> BakeError {
    BakeError::Invalid(message.into())
}
