//! The `strata` command line: clap definitions, output formats, progress
//! rendering and the one place exit codes are decided.
//!
//! Library crates below report through return values and events; only this
//! crate writes to the terminal. Stdout carries data (IDs, tables, JSON);
//! progress and diagnostics go to stderr.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod daemon;
mod exit;
mod progress;
mod render;

pub use exit::{EXIT_FAILURE, EXIT_USAGE, UsageError};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Build OCI images from Dockerfiles, without a daemon",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build an image from a Dockerfile and a context
    Build(Box<commands::build::BuildArgs>),
    /// Build the targets of a bake file (HCL, JSON or compose), as `docker buildx bake`
    Bake(Box<commands::bake::BakeArgs>),
    /// Download an image from a registry
    Pull(commands::registry::PullArgs),
    /// Upload an image to a registry
    Push(commands::registry::PushArgs),
    /// Log in to a registry
    Login(commands::registry::LoginArgs),
    /// Log out from a registry
    Logout(commands::registry::LogoutArgs),
    /// List images
    Images(commands::image::ImagesArgs),
    /// Manage images
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Show low-level information about an image as JSON
    Inspect(commands::image::InspectArgs),
    /// Show the history of an image
    History(commands::image::HistoryArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(commands::image::TagArgs),
    /// Remove one or more images
    Rmi(commands::image::RmiArgs),
    /// Show the changes of an image's top layer, between two images, or of a container
    Diff(commands::image::DiffArgs),
    /// Save one or more images to a tar archive
    Save(commands::image::SaveArgs),
    /// Load images from a tar archive (docker-archive or OCI layout)
    Load(commands::image::LoadArgs),
    /// Create an image from a root filesystem tarball
    Import(commands::image::ImportArgs),
    /// Remove unused data (dangling images and build cache)
    Prune(commands::image::PruneArgs),
    /// Verify every blob and reference in the store
    Check(commands::system::CheckArgs),
    /// Manage the build cache
    #[command(subcommand)]
    Builder(commands::system::BuilderCommand),
    /// Show store-wide information
    #[command(subcommand)]
    System(commands::system::SystemCommand),
    /// Run a command in a new container
    Run(commands::container::RunArgs),
    /// List containers
    Ps(commands::container::PsArgs),
    /// Remove one or more containers
    Rm(commands::container::RmArgs),
    /// Stop one or more running containers (the stop signal, then SIGKILL after a timeout)
    Stop(commands::container::StopArgs),
    /// Kill one or more running containers (SIGKILL, or the signal given)
    Kill(commands::container::KillArgs),
    /// Create a new image from a container's changes
    Commit(commands::container::CommitArgs),
    /// Developer tools: dump the parser's AST and other internals
    #[command(subcommand)]
    Debug(commands::debug::DebugCommand),
}

/// Runs the CLI and decides the process exit code.
pub fn main() -> ExitCode {
    // Must run before anything starts a thread: when this process is the
    // executor's re-exec'd helper, this call never returns.
    strata_exec::maybe_run_helper();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Build(a) => commands::build::run(*a),
        Command::Bake(a) => commands::bake::run(*a),
        Command::Pull(a) => commands::registry::pull(a),
        Command::Push(a) => commands::registry::push(a),
        Command::Login(a) => commands::registry::login(a),
        Command::Logout(a) => commands::registry::logout(a),
        Command::Images(a) => commands::image::images(a),
        Command::Image(c) => commands::image::image(c),
        Command::Inspect(a) => commands::image::inspect(a),
        Command::History(a) => commands::image::history(a),
        Command::Tag(a) => commands::image::tag(a),
        Command::Rmi(a) => commands::image::rmi(a),
        Command::Diff(a) => commands::image::diff(a),
        Command::Save(a) => commands::image::save(a),
        Command::Load(a) => commands::image::load(a),
        Command::Import(a) => commands::image::import(a),
        Command::Prune(a) => commands::image::prune(a),
        Command::Check(a) => commands::system::check(a),
        Command::Builder(c) => commands::system::builder(c),
        Command::System(c) => commands::system::system(c),
        Command::Run(a) => commands::container::run(a),
        Command::Ps(a) => commands::container::ps(a),
        Command::Rm(a) => commands::container::rm(a),
        Command::Stop(a) => commands::container::stop(a),
        Command::Kill(a) => commands::container::kill(a),
        Command::Commit(a) => commands::container::commit(a),
        Command::Debug(c) => commands::debug::run(c),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "the CLI is where errors are rendered")]
            {
                eprintln!("error: {}", strata_build::error_chain(err.as_ref()));
            }
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}
