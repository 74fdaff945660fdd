//! The instructions that change only the image config (ENV, LABEL, EXPOSE,
//! USER, WORKDIR's config part, CMD, ENTRYPOINT, SHELL, VOLUME, STOPSIGNAL,
//! HEALTHCHECK, ONBUILD, MAINTAINER, and ARG's bookkeeping) as one pure
//! function, [`apply_instruction`]: no store, no root, no process. A build
//! step and a `--change` line (`strata import`, `strata commit -c`) go
//! through it alike, so quoting, JSON and shell forms and EXPOSE ranges
//! behave the same in both ([`apply_changes`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_frontend::{Args, BuildInputs, GlobalScope, Instruction, StageScope, env_get, env_set};
use strata_oci::image::{ContainerConfig, HealthConfig, ImageConfig};

mod go_format;

/// Why an instruction could not be applied; the caller says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The ARG scope an instruction is applied in.
pub struct ArgScope<'a> {
    /// The ARGs the stage has declared so far (ARG adds to them).
    pub stage: &'a mut StageScope,
    /// The predefined platform ARGs and the ARGs before the first FROM.
    pub global: &'a GlobalScope,
    pub inputs: &'a BuildInputs,
}

/// An image config as a stage builds it up.
pub struct ConfigState<'a> {
    pub config: &'a mut ImageConfig,
    /// Whether this stage has set CMD: ENTRYPOINT then keeps it, and resets
    /// only a CMD inherited from the base (BuildKit's `cmdSet`).
    pub cmd_set: &'a mut bool,
}

/// What applying one instruction did, besides changing the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The history entry's `created_by`, which also goes into the step's
    /// cache key.
    pub history: String,
    /// Whether the step has a history entry: ONBUILD has none in BuildKit
    /// (`dispatchOnbuild` commits nothing), though its text still keys the
    /// cache.
    pub recorded: bool,
    /// WORKDIR: the (clean, absolute) directory the step must create when
    /// missing.
    pub workdir: Option<String>,
}

/// Applies one config instruction to `state`. RUN, COPY, ADD and FROM are
/// not config instructions and are refused (`X is not allowed here`), as
/// is any keyword this function does not know.
pub fn apply_instruction(
    state: ConfigState<'_>,
    ins: &Instruction,
    args: ArgScope<'_>,
    escape: char,
) -> Result<Applied, ConfigError> {
    let ConfigState { config, cmd_set } = state;
    let env = config.config.env.clone().unwrap_or_default();
    let fail = |m: String| ConfigError(m);
    let ArgScope {
        stage,
        global,
        inputs,
    } = args;
    if ins.keyword == "arg" {
        let env_lookup = |k: &str| env_get(&env, k);
        let history = stage
            .declare(ins, global, inputs, &env_lookup, escape)
            .map_err(|e| fail(e.to_string()))?;
        return Ok(Applied {
            history,
            recorded: true,
            workdir: None,
        });
    }
    let scope: &StageScope = stage;
    // Expansion sees what a RUN would: of an ENV and an ARG of one name,
    // the one set last (`StageScope::lookup`).
    let env_lookup = |k: &str| env_get(&env, k);
    let lookup = |k: &str| scope.lookup(&env_lookup, k);
    let expand =
        |w: &str| strata_frontend::expand_word(w, &lookup, escape).map_err(|e| fail(e.to_string()));
    let words = || -> Result<Vec<String>, ConfigError> {
        match &ins.args {
            Args::Exec(v) => Ok(v.clone()),
            Args::Shell(s) => {
                strata_frontend::split_words(s, &lookup, escape).map_err(|e| fail(e.to_string()))
            }
        }
    };
    // ENV and LABEL split before expanding (the reference's parseWords,
    // then ProcessWord per word): `ENV E=$A-${B}` keeps B's spaces.
    let pair_words = || -> Result<Vec<String>, ConfigError> {
        match &ins.args {
            Args::Exec(v) => Ok(v.clone()),
            Args::Shell(s) => {
                strata_frontend::expand_words(s, &lookup, escape).map_err(|e| fail(e.to_string()))
            }
        }
    };
    let cfg = &mut config.config;
    let mut workdir = None;
    let mut recorded = true;
    let mut env_names: Vec<String> = Vec::new();
    let history = match ins.keyword.as_str() {
        "env" => {
            let w = pair_words()?;
            let mut e = cfg.env.clone().unwrap_or_default();
            let mut shown = Vec::new();
            if !w.first().is_some_and(|f| f.contains('=')) {
                // Legacy `ENV key value with spaces`.
                let (k, v) = ins
                    .text
                    .split_once(char::is_whitespace)
                    .unwrap_or((&ins.text, ""));
                let v = expand(v.trim())?;
                env_set(&mut e, k, &v);
                env_names.push(k.to_owned());
                shown.push(format!("{k}={v}"));
            } else {
                for p in w {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| fail(format!("ENV {p}: expected KEY=VALUE")))?;
                    env_set(&mut e, k, v);
                    env_names.push(k.to_owned());
                    shown.push(format!("{k}={v}"));
                }
            }
            cfg.env = Some(e);
            format!("ENV {}", shown.join(" "))
        }
        "label" => {
            let w = pair_words()?;
            let mut shown = Vec::new();
            if !w.first().is_some_and(|f| f.contains('=')) {
                // Legacy `LABEL key value with spaces`, as for ENV (the
                // reference's parseNameVal; lint rule LegacyKeyValueFormat).
                let (k, v) = ins
                    .text
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| fail("LABEL must have two arguments".into()))?;
                let (k, v) = (expand(k)?, expand(v.trim())?);
                shown.push((k, v));
            } else {
                for p in w {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| fail(format!("LABEL {p}: expected KEY=VALUE")))?;
                    shown.push((k.to_owned(), v.to_owned()));
                }
            }
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            let mut text = String::from("LABEL");
            for (k, v) in shown {
                text.push_str(&format!(" {k}={v}"));
                labels.insert(k, v);
            }
            text
        }
        "workdir" => {
            let w = expand(&ins.text)?;
            let cur = cfg
                .working_dir
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "/".into());
            let joined = if w.starts_with('/') {
                PathBuf::from(&w)
            } else {
                Path::new(&cur).join(&w)
            };
            let clean = clean_abs(&joined);
            cfg.working_dir = Some(clean.clone());
            workdir = Some(clean.clone());
            format!("WORKDIR {clean}")
        }
        "user" => {
            let u = expand(&ins.text)?;
            cfg.user = Some(u.clone());
            format!("USER {u}")
        }
        "cmd" | "entrypoint" => {
            let v = match &ins.args {
                Args::Exec(v) => v.clone(),
                Args::Shell(s) => {
                    let mut sh = cfg
                        .shell
                        .clone()
                        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                    sh.push(s.clone());
                    sh
                }
            };
            // `CMD %q` in the reference: `CMD ["/bin/sh" "-c" "echo hi"]`.
            let history = format!(
                "{} {}",
                ins.keyword.to_uppercase(),
                go_format::quoted_list(&v)
            );
            if ins.keyword == "cmd" {
                cfg.cmd = Some(v);
                *cmd_set = true;
            } else {
                cfg.entrypoint = Some(v);
                // A new ENTRYPOINT resets the CMD inherited from the base,
                // not one this stage set before it.
                if !*cmd_set {
                    cfg.cmd = None;
                }
            }
            history
        }
        "shell" => {
            let Args::Exec(v) = &ins.args else {
                return Err(fail(
                    "SHELL requires the arguments to be in JSON form".into(),
                ));
            };
            cfg.shell = Some(v.clone());
            format!("SHELL {}", go_format::plain_list(v))
        }
        "expose" => {
            // The reference sorts the words as written (`parseExpose`'s
            // `sort.Strings`), then expands each and parses what it gives.
            let mut raw = ins.args.words();
            raw.sort();
            let mut listed = Vec::new();
            for word in raw {
                for p in strata_frontend::split_words(&word, &lookup, escape)
                    .map_err(|e| fail(e.to_string()))?
                {
                    listed.extend(expose_ports(&p).map_err(fail)?);
                }
            }
            let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in &listed {
                ports.insert(port.clone(), Default::default());
            }
            // `EXPOSE %v` of the parsed ports, in order, repeats kept.
            format!("EXPOSE {}", go_format::plain_list(&listed))
        }
        "volume" => {
            let listed = words()?;
            if listed.iter().any(String::is_empty) {
                return Err(fail("VOLUME specified can not be an empty string".into()));
            }
            let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
            for v in &listed {
                vols.insert(v.clone(), Default::default());
            }
            format!("VOLUME {}", go_format::plain_list(&listed))
        }
        "stopsignal" => {
            let s = expand(&ins.text)?;
            cfg.stop_signal = Some(s.clone());
            format!("STOPSIGNAL {s}")
        }
        "maintainer" => {
            config.author = Some(ins.text.clone());
            format!("MAINTAINER {}", ins.text)
        }
        "onbuild" => {
            cfg.on_build
                .get_or_insert_with(Vec::new)
                .push(ins.text.clone());
            recorded = false;
            format!("ONBUILD {}", ins.text)
        }
        "healthcheck" => {
            let hc = healthcheck(ins)?;
            // `HEALTHCHECK %q` of the reference's config struct (Test, four
            // durations, Retries): `&{["CMD" "x"] "0s" "0s" "0s" "0s" '\x00'}`.
            let text = format!(
                "HEALTHCHECK &{{{} {} {} {} {} {}}}",
                go_format::quoted_list(&hc.test),
                go_format::quote(&go_format::duration(hc.interval)),
                go_format::quote(&go_format::duration(hc.timeout)),
                go_format::quote(&go_format::duration(hc.start_period)),
                go_format::quote(&go_format::duration(hc.start_interval)),
                go_format::quote_rune(hc.retries),
            );
            cfg.healthcheck = Some(hc);
            text
        }
        other => {
            return Err(fail(format!(
                "{} is not allowed here",
                other.to_uppercase()
            )));
        }
    };
    for name in &env_names {
        stage.env_set(name);
    }
    Ok(Applied {
        history,
        recorded,
        workdir,
    })
}

/// `HEALTHCHECK NONE` or `HEALTHCHECK [--interval=...] CMD ...`.
fn healthcheck(ins: &Instruction) -> Result<HealthConfig, ConfigError> {
    let text = ins.text.trim();
    let test = if text.eq_ignore_ascii_case("none") {
        vec!["NONE".to_owned()]
    } else {
        let cmd = text
            .strip_prefix("CMD")
            .or_else(|| text.strip_prefix("cmd"))
            .map(str::trim)
            .ok_or_else(|| ConfigError("HEALTHCHECK must be NONE or CMD <command>".into()))?;
        match serde_json::from_str::<Vec<String>>(cmd) {
            Ok(v) => std::iter::once("CMD".to_owned()).chain(v).collect(),
            Err(_) => vec!["CMD-SHELL".to_owned(), cmd.to_owned()],
        }
    };
    let dur = |name: &str| -> Result<i64, ConfigError> {
        match ins.flag(name) {
            None => Ok(0),
            Some(v) => parse_duration_ns(v).ok_or_else(|| {
                ConfigError(format!("--{name}={v}: not a duration like 30s or 1m30s"))
            }),
        }
    };
    let retries = match ins.flag("retries") {
        None => 0,
        Some(v) => v
            .parse()
            .map_err(|_| ConfigError(format!("--retries={v}: not a number")))?,
    };
    Ok(HealthConfig {
        test,
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start-period")?,
        start_interval: dur("start-interval")?,
        retries,
    })
}

/// The instructions `--change` takes (what `docker import --change` and
/// `docker commit --change` take, and STOPSIGNAL).
const CHANGE_KEYWORDS: &[&str] = &[
    "cmd",
    "entrypoint",
    "env",
    "expose",
    "label",
    "onbuild",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// One stage's config as its config instructions change it, one after the
/// other, with what they keep between them: whether CMD was set and the
/// ARGs declared. `--change` lines are applied with it; the solver keeps the
/// same parts in its own state and calls [`apply_instruction`].
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub config: ImageConfig,
    pub cmd_set: bool,
    pub args: StageScope,
}

impl StageConfig {
    /// A stage on `config` whose instructions have set nothing yet.
    pub fn new(config: ImageConfig) -> Self {
        StageConfig {
            config,
            cmd_set: false,
            args: StageScope::new(),
        }
    }

    /// Applies `ins` (see [`apply_instruction`]), its words expanded with
    /// the ARGs of `global` and `inputs` and this stage's.
    pub fn apply(
        &mut self,
        ins: &Instruction,
        global: &GlobalScope,
        inputs: &BuildInputs,
        escape: char,
    ) -> Result<Applied, ConfigError> {
        let state = ConfigState {
            config: &mut self.config,
            cmd_set: &mut self.cmd_set,
        };
        let args = ArgScope {
            stage: &mut self.args,
            global,
            inputs,
        };
        apply_instruction(state, ins, args, escape)
    }
}

/// Applies `--change` lines (Dockerfile instructions, parsed by the
/// frontend) to the `config` object of an image config, `container_config`,
/// in order, as a Dockerfile stage would. Keys this crate's config type
/// does not know are kept as they are, and so is every key no line
/// changed, byte for byte.
pub fn apply_changes(
    container_config: &serde_json::Value,
    lines: &[String],
) -> Result<serde_json::Value, ConfigError> {
    let mut raw = match container_config {
        serde_json::Value::Null => serde_json::Map::new(),
        serde_json::Value::Object(m) => m.clone(),
        _ => {
            return Err(ConfigError(
                "the image's config is not a JSON object".into(),
            ));
        }
    };
    let before: ContainerConfig = serde_json::from_value(serde_json::Value::Object(raw.clone()))
        .map_err(|e| ConfigError(format!("the image's config: {e}")))?;
    let mut stage = StageConfig::new(ImageConfig {
        config: before.clone(),
        ..ImageConfig::default()
    });
    let inputs = BuildInputs::host(BTreeMap::new());
    for line in lines {
        let df = strata_frontend::parse(&format!("{line}\n"), "--change")
            .map_err(|d| ConfigError(format!("{line}: {}", d.message)))?;
        let global = GlobalScope::new(&df, &inputs)
            .map_err(|d| ConfigError(format!("{line}: {}", d.message)))?;
        for ins in &df.instructions {
            if !CHANGE_KEYWORDS.contains(&ins.keyword.as_str()) {
                return Err(ConfigError(format!(
                    "{line}: unsupported instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)"
                )));
            }
            stage
                .apply(ins, &global, &inputs, df.escape)
                .map_err(|e| ConfigError(format!("{line}: {e}")))?;
        }
    }
    let as_map = |c: &ContainerConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(ConfigError("the image's config does not serialize".into())),
    };
    let (before, after) = (as_map(&before)?, as_map(&stage.config.config)?);
    for k in before.keys() {
        if !after.contains_key(k) {
            raw.remove(k);
        }
    }
    for (k, v) in after {
        if before.get(&k) != Some(&v) {
            raw.insert(k, v);
        }
    }
    Ok(serde_json::Value::Object(raw))
}

/// An EXPOSE word as the ports it names, as BuildKit's `parsePort` reads
/// it (`convert_expose.go`): `[ip:][hostPort:]port[-end][/proto]`, where
/// only the container port counts, `80` is `80/tcp`, the protocol (tcp,
/// udp or sctp in any case) is written lowercase, and a range
/// `8000-8002/udp` is each port.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let bad = || format!("invalid port {word:?}");
    let parts: Vec<&str> = word.split(':').collect();
    let (ip, host_port, container) = match parts.as_slice() {
        [c] => ("".to_owned(), "", *c),
        [h, c] => ("".to_owned(), *h, *c),
        [rest @ .., h, c] => (rest.join(":"), *h, *c),
        [] => return Err(bad()),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_owned(),
        p @ ("tcp" | "udp" | "sctp") => p.to_owned(),
        _ => return Err(bad()),
    };
    let ip = ip
        .strip_prefix('[')
        .and_then(|i| i.strip_suffix(']'))
        .unwrap_or(&ip);
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("invalid IP address: {ip}"));
    }
    let range = |s: &str| -> Result<(u16, u16), String> {
        let num = |n: &str| n.parse::<u16>().map_err(|_| bad());
        match s.split_once('-') {
            Some((a, b)) if a != b => {
                let (a, b) = (num(a)?, num(b)?);
                if b < a { Err(bad()) } else { Ok((a, b)) }
            }
            Some((a, _)) => Ok((num(a)?, num(a)?)),
            None => Ok((num(s)?, num(s)?)),
        }
    };
    let (start, end) = range(port)?;
    if !host_port.is_empty() {
        let (hs, he) = range(host_port)?;
        if he - hs != end - start && end != start {
            return Err(format!(
                "invalid ranges specified for container and host Ports: {port} and {host_port}"
            ));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// `/a/./b/../c` -> `/a/c`, always absolute.
pub(crate) fn clean_abs(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go-style durations as Docker accepts them: `30s`, `1m30s`, `500ms`, `2h`.
fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult: f64 = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total = total.checked_add((value * mult) as i64)?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests;
