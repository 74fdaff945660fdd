use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RunArgs {
    /// Image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Show all containers, not only running ones
    #[arg(short, long)]
    pub all: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Containers to remove
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct CommitArgs {
    /// Container whose changes become the new image's top layer
    pub container: String,
    /// Name for the new image
    pub reference: Option<String>,
}

pub fn run(_a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata run: not implemented yet")
}
pub fn ps(_a: PsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata ps: not implemented yet")
}
pub fn rm(_a: RmArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata rm: not implemented yet")
}
pub fn commit(_a: CommitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata commit: not implemented yet")
}
