//! The values of `strata build`'s flags that need more than clap: secrets,
//! platforms, entitlements, host entries, sizes; shared with `strata bake`
//! (a bake target's keys are the same flags) and `strata run`.

use std::collections::BTreeMap;

use crate::exit::UsageError;

/// `--secret id=ID,src=FILE|env=VAR` (`type=file|env` accepted; a bare `env=`
/// with no id takes the variable's name as the id).
pub(crate) fn read_secrets(specs: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_owned()),
                Some(("src" | "source", v)) => src = Some(v.to_owned()),
                Some(("env", v)) => env = Some(v.to_owned()),
                Some(("type", _)) => {}
                _ => {
                    return Err(UsageError(format!(
                        "--secret {spec:?}: expected id=ID,src=FILE or id=ID,env=VAR"
                    ))
                    .into());
                }
            }
        }
        let id = id
            .or_else(|| env.clone())
            .ok_or_else(|| UsageError(format!("--secret {spec:?}: id= is required")))?;
        let data = match (src, env) {
            (Some(f), _) => {
                fs_err::read(&f).map_err(|e| UsageError(format!("--secret {id}: {e}")))?
            }
            (None, Some(v)) => std::env::var(&v)
                .map_err(|_| {
                    UsageError(format!(
                        "--secret {id}: environment variable {v} is not set"
                    ))
                })?
                .into_bytes(),
            (None, None) => {
                return Err(
                    UsageError(format!("--secret {spec:?}: src= or env= is required")).into(),
                );
            }
        };
        out.insert(id, data);
    }
    Ok(out)
}

/// `--platform linux/amd64,linux/arm64`: each once, linux only.
pub(crate) fn parse_platforms(list: &str) -> anyhow::Result<Vec<strata_frontend::Platform>> {
    let mut out: Vec<strata_frontend::Platform> = Vec::new();
    for p in list.split(',').map(str::trim) {
        let parsed: strata_frontend::Platform =
            p.parse()
                .map_err(|e: strata_oci::platform::PlatformError| {
                    UsageError(format!("--platform: {e}"))
                })?;
        if parsed.os != "linux" {
            return Err(
                UsageError(format!("--platform {p}: only linux images can be built")).into(),
            );
        }
        if out.contains(&parsed) {
            return Err(UsageError(format!("--platform {p} is given twice")).into());
        }
        out.push(parsed);
    }
    Ok(out)
}

/// `--allow`: buildx's entitlements. A shared BuildKit grants them per
/// build; strata runs steps itself, so `network.host` (`--network host`,
/// `RUN --network=host`) needs no grant, and what it cannot give safely is
/// refused rather than accepted and ignored.
pub(crate) fn check_entitlements(allow: &[String]) -> Result<(), UsageError> {
    for e in allow.iter().flat_map(|a| a.split(',')) {
        match e.trim() {
            "network.host" => {}
            "security.insecure" => {
                return Err(UsageError(
                    "--allow security.insecure: strata has no privileged mode; every RUN step \
                     runs with Docker's default capabilities"
                        .into(),
                ));
            }
            d if d == "device" || d.starts_with("device=") => {
                return Err(UsageError(format!(
                    "--allow {d}: strata gives steps no host devices"
                )));
            }
            other => {
                return Err(UsageError(format!(
                    "--allow {other}: unknown entitlement (network.host, security.insecure, device)"
                )));
            }
        }
    }
    Ok(())
}

/// `--add-host name:ip` (docker) or `name=ip` (buildx); an IPv6 address
/// may follow the first `:`.
pub(crate) fn parse_add_host(spec: &str) -> anyhow::Result<(String, std::net::IpAddr)> {
    let (name, ip) = spec
        .split_once('=')
        .or_else(|| spec.split_once(':'))
        .ok_or_else(|| UsageError(format!("--add-host {spec}: expected HOST:IP")))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip = ip
        .parse()
        .map_err(|_| UsageError(format!("--add-host {spec}: {ip:?} is not an IP address")))?;
    if name.is_empty() {
        return Err(UsageError(format!("--add-host {spec}: empty host name")).into());
    }
    Ok((name.to_owned(), ip))
}

/// `64m`, `1g`, `512k`, `1048576`: binary units, as docker's `--shm-size`.
pub(crate) fn parse_binary_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|n| *n > 0)
}

/// The default network is a private namespace only where pasta can connect
/// it; elsewhere steps share the host's network, which the user must know.
pub(crate) fn warn_if_default_network_is_the_hosts(network: strata_exec::Network) {
    if network == strata_exec::Network::Sandbox && strata_exec::sandbox_network_helper().is_none() {
        #[expect(
            clippy::print_stderr,
            reason = "a warning for the user, before any progress"
        )]
        {
            eprintln!(
                "warning: pasta (Debian package passt) is not installed or cannot open {}: the default network is the host's (--network host), not a private one",
                strata_exec::network::TUN_DEVICE
            );
        }
    }
}

/// `--isolation MODE`, as `strata build` and `strata run` take it.
#[derive(clap::Args)]
pub struct IsolationFlag {
    /// How RUN steps (and `strata run`'s container) are isolated: `auto`
    /// (the strongest that works here; `strata build`'s progress output
    /// says which and why), `namespaces`, `chroot` (for unprivileged
    /// containers: needs only Docker's default capabilities, as root; see
    /// docs/ci.md), or `none` (refused: it would run steps in strata's own
    /// root filesystem)
    #[arg(long = "isolation", default_value = "auto", value_name = "MODE")]
    pub value: String,
}

impl IsolationFlag {
    /// The mode asked for: an unknown one or `none` is a usage error.
    pub(crate) fn requested(&self) -> Result<strata_exec::Isolation, UsageError> {
        let requested: strata_exec::Isolation = self.value.parse().map_err(UsageError)?;
        if requested == strata_exec::Isolation::None {
            return Err(UsageError(strata_exec::isolation::NONE_REFUSED.into()));
        }
        Ok(requested)
    }
}

/// Resolves a requested isolation once for the command, with the words
/// saying what `auto` picked and why (`None` for an explicit mode). Where
/// nothing works `auto` stays `auto`, so that a build without RUN steps
/// still succeeds and the first step fails naming what is missing; an
/// explicit mode that does not work here is a usage error at once.
pub(crate) fn resolve_isolation(
    requested: strata_exec::Isolation,
) -> Result<(strata_exec::Isolation, Option<String>), UsageError> {
    match strata_exec::isolation::choose(requested) {
        Ok(choice) if requested == strata_exec::Isolation::Auto => Ok((
            choice.isolation,
            Some(format!(
                "isolation: {} ({})",
                choice.isolation, choice.reason
            )),
        )),
        Ok(choice) => Ok((choice.isolation, None)),
        Err(_) if requested == strata_exec::Isolation::Auto => Ok((requested, None)),
        Err(e) => Err(UsageError(e)),
    }
}

/// `--network`, as buildx names its modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetworkMode {
    /// A private network namespace connected outwards (see docs/decisions.md)
    Default,
    /// Loopback only
    None,
    /// The host's network namespace
    Host,
}

impl NetworkMode {
    pub(super) fn network(self) -> strata_exec::Network {
        match self {
            NetworkMode::Default => strata_exec::Network::Sandbox,
            NetworkMode::None => strata_exec::Network::None,
            NetworkMode::Host => strata_exec::Network::Host,
        }
    }
}
