use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's AST in the reference parser's dump format
    DumpAst {
        /// The Dockerfile
        file: std::path::PathBuf,
    },
}

pub fn run(_cmd: DebugCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata debug: not implemented yet")
}
