use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` to read a Dockerfile from stdin
    pub context: String,
}

pub fn run(_args: BuildArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata build: not implemented yet")
}
