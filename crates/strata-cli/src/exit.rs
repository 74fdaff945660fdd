//! Exit codes and the usage error, in a leaf module: every command returns
//! them and `main` decides the process's code from them in one place.

/// Exit code for a build or command that failed on its own terms (a step
/// failed, an image is missing).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for bad command-line usage, as clap and `docker` use.
pub const EXIT_USAGE: u8 = 2;

/// An error that is the user's invocation, not the work: exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
