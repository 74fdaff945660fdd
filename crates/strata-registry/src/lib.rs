//! A client for OCI distribution (registry v2) APIs: transport and TLS policy,
//! authentication (anonymous, Basic, Bearer tokens from `WWW-Authenticate`,
//! Docker's config.json and credential helpers), manifests and indexes
//! resolved to a platform, digest-verified resumable blob downloads, and
//! uploads (existence checks, cross-repository mounts, monolithic and chunked).
//!
//! The client is blocking (reqwest's blocking client, which runs its own
//! tokio runtime); callers fetch layers in parallel with threads. It knows
//! nothing of strata's store: blobs go to a file the caller names, and the
//! caller moves them into place once verified.
//!
//! Transport policy: HTTPS with the system roots (or, where the system has
//! none, the Mozilla roots built in) plus any `--registry-ca` files and
//! `certs.d/<host>/*.crt`; plain HTTP only for loopback hosts (tried first,
//! as Docker treats them as insecure) and registries named as insecure
//! (whose TLS certificates are then not verified either, as Docker does for
//! `--insecure-registry`).

pub mod auth;
mod blobs;
mod client;
mod manifests;
mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use reqwest::blocking::Client as Http;
use strata_oci::reference::Reference;

pub use auth::{Credentials, DockerConfig};
pub use client::{ClientOptions, RootSource, root_source};
pub use manifests::{
    FetchedManifest, ResolvedImage, host_platform, parse_platform, pick_platform, platform_string,
};
pub use upload::BlobPush;

/// Manifests larger than this are refused (containerd uses the same bound).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// Config blobs larger than this are refused.
pub const MAX_CONFIG_SIZE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("docker config: {0}")]
    Config(String),
    #[error("credential helper {helper}: {message}")]
    CredentialHelper { helper: String, message: String },
    #[error("cannot reach registry {registry}: {message}")]
    Transport { registry: String, message: String },
    #[error(
        "TLS with {registry} failed: {message} (trusted roots: {roots})\n  hint: pass the registry's CA with --registry-ca FILE or put it in /etc/docker/certs.d/{registry}/ca.crt; use --insecure-registry {registry} only for a registry you trust"
    )]
    Tls {
        registry: String,
        message: String,
        /// Which roots the certificate was checked against, so that a
        /// container without a CA bundle shows it used the built-in ones.
        roots: RootSource,
    },
    #[error(
        "{what}: authentication required by {registry}{detail}\n  hint: run `strata login {registry}`"
    )]
    Unauthorized {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{what}: access denied by {registry}{detail}")]
    Denied {
        what: String,
        registry: String,
        detail: String,
    },
    #[error("{what}: not found{detail}\n  hint: check the repository name and tag")]
    NotFound { what: String, detail: String },
    #[error("{what}: registry answered {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    #[error(
        "{what}: content does not match its digest (expected {expected}, got {actual}); refused"
    )]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: expected {expected} bytes, got {actual}; refused")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
    #[error("{reference}: no image for platform {platform} (the index has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A document, file or program that failed, with what it was; the
    /// cause stays a source.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// For `map_err`: keeps `source` as the cause of an error saying what failed.
pub(crate) fn context<E>(context: impl Into<String>) -> impl FnOnce(E) -> RegistryError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let context = context.into();
    move |source| RegistryError::Context {
        context,
        source: Box::new(source),
    }
}

impl RegistryError {
    /// Errors worth trying the next mirror (or the registry itself) for.
    fn is_not_found_or_unreachable(&self) -> bool {
        !matches!(
            self,
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. }
        )
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A repository on one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// Endpoint key: `host[:port]`, or a mirror's `scheme://host[:port]`.
    pub endpoint: String,
    /// Path of the repository (`library/alpine`).
    pub name: String,
    /// The registry as users name it, for messages and credentials.
    pub registry: String,
}

impl Repository {
    pub fn of(r: &Reference) -> Self {
        Self {
            endpoint: r.api_host().to_owned(),
            name: r.repository.clone(),
            registry: r.registry.clone(),
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

struct Endpoint {
    base: String,
    http: Http,
}

/// The registry client. Cheap to share between threads.
pub struct Client {
    opts: ClientOptions,
    config: Option<DockerConfig>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
    /// Authorization header values by (endpoint, scope).
    tokens: Mutex<HashMap<(String, String), String>>,
}
