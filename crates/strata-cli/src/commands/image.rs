use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only images matching REPOSITORY[:TAG]
    pub reference: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// List images
    Ls(ImagesArgs),
    /// Remove dangling images
    Prune(PruneArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Images by name or ID
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Image by name or ID
    pub image: String,
}

#[derive(clap::Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(clap::Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    pub a: String,
    pub b: Option<String>,
}

#[derive(clap::Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(clap::Args)]
pub struct LoadArgs {}

#[derive(clap::Args)]
pub struct ImportArgs {
    pub tarball: std::path::PathBuf,
    pub reference: Option<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {}

#[derive(clap::Args)]
pub struct CheckArgs {}

#[derive(clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune,
}

#[derive(clap::Subcommand)]
pub enum SystemCommand {
    /// Show disk usage
    Df,
}

macro_rules! todo_command {
    ($($name:ident($ty:ty)),* $(,)?) => {$(
        pub fn $name(_a: $ty) -> anyhow::Result<ExitCode> {
            anyhow::bail!(concat!("strata ", stringify!($name), ": not implemented yet"))
        }
    )*};
}

todo_command!(
    images(ImagesArgs),
    image(ImageCommand),
    inspect(InspectArgs),
    history(HistoryArgs),
    tag(TagArgs),
    rmi(RmiArgs),
    diff(DiffArgs),
    save(SaveArgs),
    load(LoadArgs),
    import(ImportArgs),
    prune(PruneArgs),
    check(CheckArgs),
    builder(BuilderCommand),
    system(SystemCommand),
);
