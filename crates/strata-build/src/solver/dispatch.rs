//! One instruction: the config-changing ones here, RUN and COPY handed on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_frontend::{Args, Instruction, StageScope, env_get, env_set};
use strata_oci::image::HealthConfig;

use super::{Solver, State};
use crate::Result;
use crate::cache::key_of;

impl Solver<'_> {
    /// Runs one instruction; returns whether it was a cache hit.
    pub(crate) fn instruction(
        &self,
        n: usize,
        ins: &Instruction,
        state: &mut State,
        args: &mut StageScope,
    ) -> Result<bool> {
        let env = state.config.config.env.clone().unwrap_or_default();
        let escape = self.df.escape;
        // Expansion sees ENV first (ENV beats ARG of the same name), then ARGs.
        let lookup = |k: &str| env_get(&env, k).or_else(|| args.get(k));
        let expand = |w: &str| {
            strata_frontend::expand_word(w, &lookup, escape)
                .map_err(|e| self.fail(ins, &e.to_string()))
        };
        let words = |this: &Self| -> Result<Vec<String>> {
            match &ins.args {
                Args::Exec(v) => Ok(v.clone()),
                Args::Shell(s) => strata_frontend::split_words(s, &lookup, escape)
                    .map_err(|e| this.fail(ins, &e.to_string())),
            }
        };
        let cfg = &mut state.config.config;
        let history: String;
        let mut make_workdir: Option<(String, String)> = None;
        match ins.keyword.as_str() {
            "run" => return self.run_step(n, ins, state, args),
            "copy" | "add" => {
                let values: BTreeMap<String, String> = args.env().into_iter().collect();
                return self.copy_step(ins, state, &values);
            }
            "arg" => {
                let env_lookup = |k: &str| env_get(&env, k);
                history = args
                    .declare(ins, &self.global, &self.inputs, &env_lookup, escape)
                    .map_err(|e| self.fail(ins, &e.to_string()))?;
            }
            "env" => {
                let w = words(self)?;
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
                        let (k, v) = p.split_once('=').ok_or_else(|| {
                            self.fail(ins, &format!("ENV {p}: expected KEY=VALUE"))
                        })?;
                        env_set(&mut e, k, v);
                        shown.push(format!("{k}={v}"));
                    }
                }
                cfg.env = Some(e);
                history = format!("ENV {}", shown.join(" "));
            }
            "label" => {
                let w = words(self)?;
                let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
                let mut shown = Vec::new();
                for p in w {
                    let (k, v) = p
                        .split_once('=')
                        .ok_or_else(|| self.fail(ins, &format!("LABEL {p}: expected KEY=VALUE")))?;
                    labels.insert(k.to_owned(), v.to_owned());
                    shown.push(format!("{k}={v}"));
                }
                history = format!("LABEL {}", shown.join(" "));
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
                history = format!("WORKDIR {clean}");
                make_workdir = Some((clean, cfg.user.clone().unwrap_or_default()));
            }
            "user" => {
                let u = expand(&ins.text)?;
                cfg.user = Some(u.clone());
                history = format!("USER {u}");
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
                history = format!(
                    "{} {}",
                    ins.keyword.to_uppercase(),
                    serde_json::to_string(&v).unwrap_or_default()
                );
                if ins.keyword == "cmd" {
                    cfg.cmd = Some(v);
                    state.cmd_set = true;
                } else {
                    cfg.entrypoint = Some(v);
                    // A new ENTRYPOINT resets the CMD inherited from the base,
                    // not one this stage set before it.
                    if !state.cmd_set {
                        cfg.cmd = None;
                    }
                }
            }
            "shell" => {
                let Args::Exec(v) = &ins.args else {
                    return Err(self.fail(ins, "SHELL requires the arguments to be in JSON form"));
                };
                cfg.shell = Some(v.clone());
                history = format!("SHELL {}", serde_json::to_string(v).unwrap_or_default());
            }
            "expose" => {
                let ports = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
                for p in words(self)? {
                    for port in expose_ports(&p).map_err(|e| self.fail(ins, &e))? {
                        ports.insert(port, Default::default());
                    }
                }
                history = format!("EXPOSE {}", ins.text);
            }
            "volume" => {
                let vols = cfg.volumes.get_or_insert_with(BTreeMap::new);
                for v in words(self)? {
                    vols.insert(v, Default::default());
                }
                history = format!("VOLUME {}", ins.text);
            }
            "stopsignal" => {
                let s = expand(&ins.text)?;
                cfg.stop_signal = Some(s.clone());
                history = format!("STOPSIGNAL {s}");
            }
            "maintainer" => {
                state.config.author = Some(ins.text.clone());
                history = format!("MAINTAINER {}", ins.text);
            }
            "onbuild" => {
                cfg.on_build
                    .get_or_insert_with(Vec::new)
                    .push(ins.text.clone());
                history = format!("ONBUILD {}", ins.text);
            }
            "healthcheck" => {
                let text = ins.text.trim();
                let test = if text.eq_ignore_ascii_case("none") {
                    vec!["NONE".to_owned()]
                } else {
                    let cmd = text
                        .strip_prefix("CMD")
                        .or_else(|| text.strip_prefix("cmd"))
                        .map(str::trim)
                        .ok_or_else(|| {
                            self.fail(ins, "HEALTHCHECK must be NONE or CMD <command>")
                        })?;
                    match serde_json::from_str::<Vec<String>>(cmd) {
                        Ok(v) => std::iter::once("CMD".to_owned()).chain(v).collect(),
                        Err(_) => vec!["CMD-SHELL".to_owned(), cmd.to_owned()],
                    }
                };
                let dur = |name: &str| -> Result<i64> {
                    match ins.flag(name) {
                        None => Ok(0),
                        Some(v) => parse_duration_ns(v).ok_or_else(|| {
                            self.fail(
                                ins,
                                &format!("--{name}={v}: not a duration like 30s or 1m30s"),
                            )
                        }),
                    }
                };
                let retries = match ins.flag("retries") {
                    None => 0,
                    Some(v) => v
                        .parse()
                        .map_err(|_| self.fail(ins, &format!("--retries={v}: not a number")))?,
                };
                let hc = HealthConfig {
                    test,
                    interval: dur("interval")?,
                    timeout: dur("timeout")?,
                    start_period: dur("start-period")?,
                    start_interval: dur("start-interval")?,
                    retries,
                };
                state.config.config.healthcheck = Some(hc);
                history = format!("HEALTHCHECK {text}");
            }
            other_kw => {
                return Err(self.fail(
                    ins,
                    &format!("{} is not allowed here", other_kw.to_uppercase()),
                ));
            }
        }
        // WORKDIR creates a missing directory (and its missing parents) as a
        // layer, owned by the current USER, as BuildKit does; a cached step
        // like COPY, so a rebuild neither looks nor writes again.
        if let Some((dir, user)) = make_workdir {
            let key = key_of(&[state.key.as_bytes(), history.as_bytes(), user.as_bytes()]);
            if self.cache_hit(&key, state)? {
                return Ok(true);
            }
            let layer = self.workdir_layer(&dir, &user, state, ins)?;
            self.finish_step(&key, layer, state, history)?;
            return Ok(false);
        }
        state
            .config
            .push_step(None, Some(self.created.clone()), history.clone());
        state.key = key_of(&[state.key.as_bytes(), history.as_bytes()]);
        Ok(false)
    }
}

/// `/a/./b/../c` -> `/a/c`, always absolute.
/// An EXPOSE word as the ports it names, as docker's `nat.ParsePortSpecs`
/// reads it: `80` is `80/tcp`, and a range `8000-8002/udp` is each port.
pub(crate) fn expose_ports(word: &str) -> std::result::Result<Vec<String>, String> {
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
pub(crate) fn parse_duration_ns(s: &str) -> Option<i64> {
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
    use super::*;

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
        assert_eq!(e, vec!["B=2", "A=3"]);
        assert_eq!(env_get(&e, "A").as_deref(), Some("3"));
    }

    #[test]
    fn cache_keys_separate_their_parts() {
        assert_ne!(key_of(&[b"ab", b"c"]), key_of(&[b"a", b"bc"]));
    }
}
