//! One module per group of subcommands; each owns its clap arguments and
//! rendering.

pub mod build;
pub mod container;
pub mod debug;
pub mod image;
pub mod registry;
pub mod system;

use std::process::ExitCode;

/// Runs `each` on every item named on the command line, as `docker rm` and
/// `rmi` do: an item's error (the inner one) is printed and the others
/// still run; the exit code says whether any failed. The outer error (the
/// output could not be written) stops the command.
pub(crate) fn each_reporting_errors<T, E: std::fmt::Display>(
    items: &[T],
    mut each: impl FnMut(&T) -> anyhow::Result<Result<(), E>>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    for item in items {
        if let Err(e) = each(item)? {
            #[expect(
                clippy::print_stderr,
                reason = "per-item errors, as docker prints them"
            )]
            {
                eprintln!("Error response from daemon: {e}");
            }
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
