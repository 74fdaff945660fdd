//! The executor's error types. Causes are chained through `#[source]` and
//! never repeated in a variant's own message, so a renderer that walks the
//! chain (the CLI prints `{:#}`) shows each cause once.

use std::path::PathBuf;

use strata_oci::Digest;

/// The executor itself failed (a step exiting non-zero is not an error).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid step: {0}")]
    Invalid(String),
    #[error("cannot start the step helper {}", exe.display())]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {}", exe.display())]
    Tool {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a rootless helper's user namespace ID maps failed.
    #[error("mapping IDs for the rootless helper: {0}")]
    IdMap(String),
    /// Talking to the helper process failed (`what` names the exchange).
    #[error("step helper: {what}")]
    HelperIo {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The helper reported a failure in words (its stderr or result file:
    /// text is all that crosses the process boundary).
    #[error("step helper: {0}")]
    Helper(String),
    /// Setting up the step's root or process failed (the message names what).
    #[error("setting up the step: {0}")]
    Setup(String),
    #[error("encoding the step for its helper")]
    Encode(#[source] serde_json::Error),
    #[error("reading the step helper's result {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("the step was cancelled")]
    Cancelled,
    #[error("unpacking layer into {}", path.display())]
    Unpack {
        path: PathBuf,
        #[source]
        source: UnpackError,
    },
}

/// Why a layer could not be unpacked into a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("creating the snapshot directory")]
    Create(#[source] std::io::Error),
    #[error(transparent)]
    Apply(#[from] strata_oci::apply::ApplyError),
    #[error("reading the layer stream")]
    Read(#[source] std::io::Error),
    /// The uncompressed stream is not the layer the caller asked for.
    #[error("the layer's content is {actual}, not its diffID {expected}")]
    DiffIdMismatch { expected: Digest, actual: Digest },
    /// Rootless: the unpack ran in a helper inside a user namespace.
    #[error("in the rootless helper")]
    Rootless(#[source] Box<ExecError>),
}
