//! `pull`, `push`, `login`, `logout`, and the registry flags `build` shares.

#![expect(
    clippy::print_stderr,
    reason = "transfer progress and status go to stderr, like docker's"
)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;

use anyhow::Context;
use strata_image::registry::TransferEvent;
use strata_oci::reference::Reference;
use strata_registry::{Client, ClientOptions, Credentials, DockerConfig};

use crate::exit::UsageError;

/// How to reach registries; shared by every command that talks to one.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryFlags {
    /// Registry (`host[:port]`) that may be reached over plain HTTP or with an unverified certificate; repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
    /// A CA certificate (PEM) to trust for registries, beside the system roots and certs.d; repeatable
    #[arg(long = "registry-ca", value_name = "FILE")]
    pub ca: Vec<PathBuf>,
    /// A mirror of Docker Hub, tried before it for pulls (`https://mirror.example`); repeatable
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
}

impl RegistryFlags {
    pub fn client(&self, credentials: HashMap<String, Credentials>) -> anyhow::Result<Client> {
        for m in &self.mirrors {
            if !(m.starts_with("https://") || m.starts_with("http://")) {
                return Err(UsageError(format!(
                    "--registry-mirror {m}: expected a URL (https://host[:port])"
                ))
                .into());
            }
        }
        let mut opts = ClientOptions {
            insecure_registries: self.insecure.clone(),
            ca_files: self.ca.clone(),
            mirrors: self.mirrors.clone(),
            credentials,
            ..ClientOptions::default()
        };
        // Uploads larger than this go in chunks; settable for tests and for
        // registries behind proxies that cap request sizes.
        if let Some(n) = std::env::var("STRATA_REGISTRY_CHUNK_SIZE")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n > 0)
        {
            opts.chunk_size = n;
        }
        Ok(Client::new(opts)?)
    }
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// Image reference, e.g. `alpine:3.20` or `registry:5000/app@sha256:...`
    pub reference: String,
    /// Platform to pull from a multi-platform image (`os/arch[/variant]`; default: the host's)
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the reference pulled, no progress
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// Image to push, named by the reference to push it to (`registry/repo:tag`)
    pub reference: String,
    /// Print only the pushed digest
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(clap::Args)]
pub struct LoginArgs {
    /// Registry host (default: Docker Hub)
    pub server: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: arguments are visible to other users)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(clap::Args)]
pub struct LogoutArgs {
    /// Registry host (default: Docker Hub)
    pub server: Option<String>,
}

fn parse_reference(s: &str) -> anyhow::Result<Reference> {
    Reference::parse(s).map_err(|e| UsageError(e.to_string()).into())
}

/// Renders transfer events as `docker pull`/`push` does (one line per layer
/// state change; byte counts are not drawn in plain output).
pub(crate) fn render_transfer(quiet: bool, pushing: bool) -> impl Fn(TransferEvent) + Sync {
    let seen = Mutex::new(std::collections::HashSet::<String>::new());
    move |e| {
        if quiet {
            return;
        }
        match e {
            TransferEvent::Resolved { .. } => {}
            TransferEvent::Exists { short } => {
                let what = if pushing {
                    "Layer already exists"
                } else {
                    "Already exists"
                };
                eprintln!("{short}: {what}");
            }
            TransferEvent::Progress { short, .. } => {
                if seen.lock().expect("seen set").insert(short.clone()) {
                    eprintln!(
                        "{short}: {}",
                        if pushing { "Pushing" } else { "Downloading" }
                    );
                }
            }
            TransferEvent::Finished { short, how } => eprintln!("{short}: {how}"),
        }
    }
}

fn parse_platform(p: Option<&str>) -> anyhow::Result<strata_oci::image::Platform> {
    match p {
        None => Ok(strata_registry::host_platform()),
        Some(s) => strata_registry::parse_platform(s).ok_or_else(|| {
            UsageError(format!("--platform {s}: expected os/arch[/variant]")).into()
        }),
    }
}

pub fn pull(a: PullArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&a.reference)?;
    let platform = parse_platform(a.platform.as_deref())?;
    let client = a.registry.client(HashMap::new())?;
    let store = super::store::open_store()?;
    let lease = store.lease("pull")?;
    if !a.quiet {
        eprintln!(
            "{}: Pulling from {}",
            reference
                .tag
                .clone()
                .unwrap_or_else(|| reference.manifest_selector()),
            strata_oci::reference::familiar(&reference.name())
        );
    }
    let render = render_transfer(a.quiet, false);
    let pulled = strata_image::registry::pull(
        &store,
        &lease,
        &client,
        &reference,
        &platform,
        strata_image::registry::Naming::Tagged,
        &render,
    )?;
    if !a.quiet {
        eprintln!("Digest: {}", pulled.digest);
        eprintln!(
            "Status: {} for {}",
            if pulled.downloaded {
                "Downloaded newer image"
            } else {
                "Image is up to date"
            },
            reference.familiar()
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{reference}")?;
    Ok(ExitCode::SUCCESS)
}

/// `name` as a push target: a reference with a tag.
fn push_reference(name: &str) -> anyhow::Result<Reference> {
    let reference = parse_reference(name)?;
    if reference.tag.is_none() {
        return Err(UsageError(format!("{name}: push needs a tag (name:tag)")).into());
    }
    Ok(reference)
}

/// Runs `send` to push to `reference`, printed as `docker push` prints it:
/// the repository before, the tag's digest and manifest size (asked of
/// `manifest_size` once sent) after; returns the digest the tag names.
fn push_printed(
    reference: &Reference,
    quiet: bool,
    send: impl FnOnce(&(dyn Fn(TransferEvent) + Sync)) -> anyhow::Result<strata_oci::Digest>,
    manifest_size: impl FnOnce() -> anyhow::Result<u64>,
) -> anyhow::Result<strata_oci::Digest> {
    if !quiet {
        eprintln!("The push refers to repository [{}]", reference.name());
    }
    let digest = send(&render_transfer(quiet, true))?;
    if !quiet {
        eprintln!(
            "{}: digest: {digest} size: {}",
            reference.tag.as_deref().unwrap_or("latest"),
            manifest_size()?
        );
    }
    Ok(digest)
}

/// Pushes the stored image `name` to where its name points; returns the
/// manifest digest. Shared by `push` and `build --push`.
pub(crate) fn push_image(
    store: &strata_store::Store,
    client: &Client,
    name: &str,
    quiet: bool,
) -> anyhow::Result<strata_oci::Digest> {
    let reference = push_reference(name)?;
    let image = store.resolve(&reference.to_string())?;
    // Its blobs stay while they are sent, whatever `rmi` + `prune` do.
    let _reading = store.lease_images("push", [(&image, name)])?;
    push_printed(
        &reference,
        quiet,
        |render| {
            Ok(strata_image::registry::push(
                store, client, &image, &reference, render,
            )?)
        },
        || {
            Ok(match store.shipped(&image)? {
                Some(s) => s.manifest_size,
                None => image.manifest_size,
            })
        },
    )
}

/// Pushes what a build made for `name` when it is more than one stored
/// image (an index with attestations, an annotated manifest); returns the
/// digest the tag names.
pub(crate) fn push_upload(
    store: &strata_store::Store,
    client: &Client,
    upload: &strata_image::registry::Upload,
    name: &str,
    quiet: bool,
) -> anyhow::Result<strata_oci::Digest> {
    let reference = push_reference(name)?;
    push_printed(
        &reference,
        quiet,
        |render| {
            Ok(strata_image::registry::push_upload(
                store, client, upload, &reference, render,
            )?)
        },
        || Ok(upload.top.len() as u64),
    )
}

pub fn push(a: PushArgs) -> anyhow::Result<ExitCode> {
    let client = a.registry.client(HashMap::new())?;
    let store = super::store::open_store()?;
    let digest = push_image(&store, &client, &a.reference, a.quiet)?;
    if a.quiet {
        writeln!(std::io::stdout().lock(), "{digest}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `docker login` accepts `https://host/v1/` and friends; credentials are
/// keyed by the host.
fn server_host(s: Option<&str>) -> String {
    let s = s.unwrap_or(strata_oci::reference::DOCKER_HUB);
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" => strata_oci::reference::DOCKER_HUB.to_owned(),
        h => h.to_owned(),
    }
}

pub fn login(a: LoginArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(a.server.as_deref());
    let username = a
        .username
        .clone()
        .ok_or_else(|| UsageError("login needs --username (-u)".into()))?;
    let password = match (a.password.clone(), a.password_stdin) {
        (Some(_), true) => {
            return Err(UsageError(
                "--password and --password-stdin are mutually exclusive".into(),
            )
            .into());
        }
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => {
            return Err(UsageError(
                "login needs a password: --password-stdin (or --password)".into(),
            )
            .into());
        }
    };
    let creds = Credentials { username, password };
    let client = a
        .registry
        .client(HashMap::from([(host.clone(), creds.clone())]))?;
    client.check_login(&host)?;
    let mut config = DockerConfig::load()?;
    config.store(&host, &creds)?;
    eprintln!("Login Succeeded");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(a: LogoutArgs) -> anyhow::Result<ExitCode> {
    let host = server_host(a.server.as_deref());
    let mut config = DockerConfig::load()?;
    if config.erase(&host)? {
        eprintln!("Removing login credentials for {host}");
    } else {
        eprintln!("Not logged in to {host}");
    }
    Ok(ExitCode::SUCCESS)
}
