use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PullArgs {
    /// Image reference, e.g. `alpine:3.20` or `registry:5000/app@sha256:...`
    pub reference: String,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Image reference to push
    pub reference: String,
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Registry host
    pub server: Option<String>,
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    /// Registry host
    pub server: Option<String>,
}

pub fn pull(_a: PullArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata pull: not implemented yet")
}
pub fn push(_a: PushArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata push: not implemented yet")
}
pub fn login(_a: LoginArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata login: not implemented yet")
}
pub fn logout(_a: LogoutArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("strata logout: not implemented yet")
}
