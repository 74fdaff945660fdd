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
            workdir: None,
        });
    }
    let stage: &StageScope = stage;
    // Expansion sees ENV first (ENV beats ARG of the same name), then ARGs.
    let lookup = |k: &str| env_get(&env, k).or_else(|| stage.get(k));
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
            Args::Shell(s) => strata_frontend::expand_words(s, &lookup, escape)
                .map_err(|e| fail(e.to_string())),
        }
    };
    let cfg = &mut config.config;
    let mut workdir = None;
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
                shown.push(format!("{k}={v}"));
            } else {
                for p in w {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| fail(format!("ENV {p}: expected KEY=VALUE")))?;
                    env_set(&mut e, k, v);
                    shown.push(format!("{k}={v}"));
                }
            }
            cfg.env = Some(e);
            format!("ENV {}", shown.join(" "))
        }
        "label" => {
            let w = pair_words()?;
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            let mut shown = Vec::new();
            for p in w {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| fail(format!("LABEL {p}: expected KEY=VALUE")))?;
                labels.insert(k.to_owned(), v.to_owned());
                shown.push(format!("{k}={v}"));
            }
            format!("LABEL {}", shown.join(" "))
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
            let history = format!("{} {}", ins.keyword.to_uppercase(), json_list(&v));
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
            format!("SHELL {}", json_list(v))
        }
        "expose" => {
            let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in words()? {
                for port in expose_ports(&p).map_err(fail)? {
                    ports.insert(port, Default::default());
                }
            }
            format!("EXPOSE {}", ins.text)
        }
        "volume" => {
            let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
            for v in words()? {
                vols.insert(v, Default::default());
            }
            format!("VOLUME {}", ins.text)
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
            format!("ONBUILD {}", ins.text)
        }
        "healthcheck" => {
            cfg.healthcheck = Some(healthcheck(ins)?);
            format!("HEALTHCHECK {}", ins.text.trim())
        }
        other => {
            return Err(fail(format!(
                "{} is not allowed here",
                other.to_uppercase()
            )));
        }
    };
    Ok(Applied { history, workdir })
}

/// A list as JSON, as history entries show exec forms.
fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
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
    let mut config = ImageConfig {
        config: before.clone(),
        ..ImageConfig::default()
    };
    let mut cmd_set = false;
    let mut stage = StageScope::new();
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
            apply_instruction(
                ConfigState {
                    config: &mut config,
                    cmd_set: &mut cmd_set,
                },
                ins,
                ArgScope {
                    stage: &mut stage,
                    global: &global,
                    inputs: &inputs,
                },
                df.escape,
            )
            .map_err(|e| ConfigError(format!("{line}: {e}")))?;
        }
    }
    let as_map = |c: &ContainerConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(ConfigError("the image's config does not serialize".into())),
    };
    let (before, after) = (as_map(&before)?, as_map(&config.config)?);
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

/// An EXPOSE word as the ports it names, as docker's `nat.ParsePortSpecs`
/// reads it: `80` is `80/tcp`, and a range `8000-8002/udp` is each port.
fn expose_ports(word: &str) -> Result<Vec<String>, String> {
    let (port, proto) = match word.split_once('/') {
        Some((p, "")) => (p, "tcp"),
        Some((p, proto)) => (p, proto),
        None => (word, "tcp"),
    };
    let bad = || format!("invalid port {word:?}");
    let num = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (start, end) = match port.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(port)?, num(port)?),
    };
    if end < start {
        return Err(bad());
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
mod tests {
    use serde_json::json;

    use super::*;

    /// Applies a Dockerfile's instructions (after its FROM) to a fresh
    /// config, as a stage on `scratch` would; returns the histories.
    fn apply_all(dockerfile: &str, build_args: &[(&str, &str)]) -> (ImageConfig, Vec<String>) {
        let df = strata_frontend::parse(dockerfile, "Dockerfile").expect("parses");
        let inputs = BuildInputs::host(
            build_args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let global = GlobalScope::new(&df, &inputs).expect("global scope");
        let mut config = ImageConfig::new("linux", "amd64");
        let mut cmd_set = false;
        let mut stage = StageScope::new();
        let mut histories = Vec::new();
        for ins in df
            .instructions
            .iter()
            .skip_while(|i| i.keyword != "from")
            .skip(1)
        {
            let applied = apply_instruction(
                ConfigState {
                    config: &mut config,
                    cmd_set: &mut cmd_set,
                },
                ins,
                ArgScope {
                    stage: &mut stage,
                    global: &global,
                    inputs: &inputs,
                },
                df.escape,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", ins.text));
            histories.push(applied.history);
        }
        (config, histories)
    }

    /// Applies one instruction line to `config`, as the first step of a
    /// stage (`cmd_set` says whether the stage has set CMD).
    fn apply_line(
        config: &mut ImageConfig,
        mut cmd_set: bool,
        line: &str,
    ) -> Result<Applied, ConfigError> {
        let df = strata_frontend::parse(&format!("{line}\n"), "Dockerfile").expect("parses");
        let inputs = BuildInputs::host(BTreeMap::new());
        let global = GlobalScope::new(&df, &inputs).expect("global scope");
        apply_instruction(
            ConfigState {
                config,
                cmd_set: &mut cmd_set,
            },
            &df.instructions[0],
            ArgScope {
                stage: &mut StageScope::new(),
                global: &global,
                inputs: &inputs,
            },
            df.escape,
        )
    }

    fn apply_err(line: &str) -> String {
        apply_line(&mut ImageConfig::new("linux", "amd64"), false, line)
            .expect_err("refused")
            .0
    }

    #[test]
    fn env_forms_quoting_and_expansion() {
        let (c, h) = apply_all(
            "FROM scratch\nENV A=1 B=\"two words\"\nENV C ${A} and more\nENV A=$A$A\n",
            &[],
        );
        assert_eq!(
            c.config.env,
            // A reassigned variable keeps its place, as in BuildKit.
            Some(vec![
                "A=11".to_owned(),
                "B=two words".to_owned(),
                "C=1 and more".to_owned()
            ])
        );
        assert_eq!(h, ["ENV A=1 B=two words", "ENV C=1 and more", "ENV A=11"]);
        assert!(apply_err("ENV A=1 B").contains("expected KEY=VALUE"));
    }

    #[test]
    fn arg_bookkeeping_feeds_expansion_and_env_wins() {
        let (c, h) = apply_all(
            "FROM scratch\nARG V=default\nARG W\nUSER $V\nENV V=env\nLABEL v=$V w=${W:-unset}\n",
            &[("W", "given")],
        );
        assert_eq!(h[0], "ARG V=default");
        assert_eq!(c.config.user.as_deref(), Some("default"));
        let labels = c.config.labels.expect("labels");
        assert_eq!(labels["v"], "env");
        assert_eq!(labels["w"], "given");
    }

    #[test]
    fn expose_names_each_port_of_a_range() {
        let (c, h) = apply_all("FROM scratch\nEXPOSE 80 53/udp 8000-8002/tcp\n", &[]);
        let ports: Vec<String> = c.config.exposed_ports.expect("ports").into_keys().collect();
        assert_eq!(
            ports,
            ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert_eq!(h, ["EXPOSE 80 53/udp 8000-8002/tcp"]);
        assert!(apply_err("EXPOSE 9-8").contains("invalid port \"9-8\""));
        assert!(apply_err("EXPOSE http").contains("invalid port"));
    }

    #[test]
    fn cmd_and_entrypoint_forms_and_the_cmd_reset() {
        // Shell form goes through SHELL; exec form is taken as is.
        let (c, h) = apply_all(
            "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo $HOME\nENTRYPOINT [\"/init\"]\n",
            &[],
        );
        assert_eq!(
            c.config.cmd,
            Some(vec!["/bin/bash".into(), "-c".into(), "echo $HOME".into()])
        );
        assert_eq!(c.config.entrypoint, Some(vec!["/init".to_owned()]));
        assert_eq!(h[1], r#"CMD ["/bin/bash","-c","echo $HOME"]"#);
        assert_eq!(h[2], r#"ENTRYPOINT ["/init"]"#);
        // An ENTRYPOINT resets a CMD this stage did not set.
        let mut config = ImageConfig::new("linux", "amd64");
        config.config.cmd = Some(vec!["inherited".into()]);
        apply_line(&mut config, false, "ENTRYPOINT [\"/e\"]").expect("applies");
        assert_eq!(config.config.cmd, None);
        assert!(apply_err("SHELL /bin/bash -c").contains("JSON form"));
    }

    #[test]
    fn workdir_joins_cleans_and_asks_for_the_directory() {
        let (c, h) = apply_all("FROM scratch\nWORKDIR /a\nWORKDIR b/../c/.\n", &[]);
        assert_eq!(c.config.working_dir.as_deref(), Some("/a/c"));
        assert_eq!(h, ["WORKDIR /a", "WORKDIR /a/c"]);
        let mut config = ImageConfig::new("linux", "amd64");
        let applied = apply_line(&mut config, false, "WORKDIR /x/y").expect("applies");
        assert_eq!(applied.workdir.as_deref(), Some("/x/y"));
    }

    #[test]
    fn healthcheck_volume_stopsignal_onbuild_maintainer() {
        let (c, h) = apply_all(
            "FROM scratch\nHEALTHCHECK --interval=1m30s --retries=3 CMD [\"true\"]\nVOLUME [\"/data\", \"/logs\"]\nSTOPSIGNAL SIGINT\nONBUILD RUN make\nMAINTAINER me\n",
            &[],
        );
        let hc = c.config.healthcheck.expect("healthcheck");
        assert_eq!(hc.test, ["CMD", "true"]);
        assert_eq!(hc.interval, 90_000_000_000);
        assert_eq!(hc.retries, 3);
        let vols: Vec<String> = c.config.volumes.expect("volumes").into_keys().collect();
        assert_eq!(vols, ["/data", "/logs"]);
        assert_eq!(c.config.stop_signal.as_deref(), Some("SIGINT"));
        assert_eq!(c.config.on_build, Some(vec!["RUN make".to_owned()]));
        assert_eq!(c.author.as_deref(), Some("me"));
        assert_eq!(h[0], "HEALTHCHECK CMD [\"true\"]");
        assert!(apply_err("HEALTHCHECK --interval=soon CMD true").contains("not a duration"));
        assert!(apply_err("HEALTHCHECK true").contains("NONE or CMD"));
    }

    #[test]
    fn build_steps_are_not_config_instructions() {
        assert_eq!(apply_err("RUN true"), "RUN is not allowed here");
    }

    #[test]
    fn changes_parse_as_dockerfile_lines() {
        let out = apply_changes(
            &json!({}),
            &[
                "CMD echo hi".into(),
                "ENV A=1 B=\"two words\"".into(),
                "EXPOSE 8000-8001".into(),
                "WORKDIR /srv".into(),
                "LABEL \"a b\"=c".into(),
            ],
        )
        .expect("applies");
        assert_eq!(
            out,
            json!({
                "Cmd": ["/bin/sh", "-c", "echo hi"],
                "Env": ["A=1", "B=two words"],
                "ExposedPorts": {"8000/tcp": {}, "8001/tcp": {}},
                "WorkingDir": "/srv",
                "Labels": {"a b": "c"},
            })
        );
        let err = apply_changes(&json!({}), &["FROM x".into()]).expect_err("refused");
        assert!(
            err.0.starts_with("FROM x: unsupported instruction"),
            "{err}"
        );
        let err = apply_changes(&json!({}), &["EXPOSE 9-8".into()]).expect_err("refused");
        assert_eq!(err.0, "EXPOSE 9-8: invalid port \"9-8\"");
    }

    #[test]
    fn changes_keep_what_they_do_not_touch() {
        let base = json!({
            "Hostname": "abc",
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
            "Labels": {"keep": "1"},
        });
        assert_eq!(apply_changes(&base, &[]).expect("no change"), base);
        let out =
            apply_changes(&base, &["LABEL new=2".into(), "USER nobody".into()]).expect("applies");
        assert_eq!(
            out,
            json!({
                "Hostname": "abc",
                "Env": ["PATH=/bin"],
                "Cmd": ["sh"],
                "Labels": {"keep": "1", "new": "2"},
                "User": "nobody",
            })
        );
        // As in a Dockerfile, an ENTRYPOINT resets the inherited CMD.
        let out = apply_changes(&base, &["ENTRYPOINT [\"/e\"]".into()]).expect("applies");
        assert_eq!(out.get("Cmd"), None);
        assert_eq!(out["Entrypoint"], json!(["/e"]));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("abc"), None);
        assert_eq!(parse_duration_ns(""), None);
    }

    #[test]
    fn expose_ranges_name_each_port() {
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/udp").unwrap(), ["53/udp"]);
        assert_eq!(
            expose_ports("8000-8002/udp").unwrap(),
            ["8000/udp", "8001/udp", "8002/udp"]
        );
        assert!(expose_ports("http").is_err());
        assert!(expose_ports("9-8").is_err());
    }

    #[test]
    fn workdir_paths_are_cleaned() {
        assert_eq!(clean_abs(Path::new("/a/./b/../c")), "/a/c");
        assert_eq!(clean_abs(Path::new("/")), "/");
    }

    #[test]
    fn env_set_replaces() {
        let mut e = vec!["A=1".to_owned(), "B=2".to_owned()];
        env_set(&mut e, "A", "3");
        assert_eq!(e, vec!["A=3", "B=2"]);
        assert_eq!(env_get(&e, "A").as_deref(), Some("3"));
    }
}
