//! The dry dispatch of one stage: each instruction applied to the
//! environment its step would see, firing the rules that need it
//! (undefined variables, relative WORKDIR, JSON args, secrets in ARG/ENV...).

use super::env::{NON_ENV_ARGS, StageState, expand_tracked, global_value};
use super::findings::{LintOptions, Sink, range, range_in};
use super::rules;
use crate::GlobalScope;
use crate::expand::split_words;
use crate::parse::{Args, Dockerfile, Instruction};
use crate::plan::{env_get, env_set};
use crate::suggest::closest as suggest;

/// The secret-looking names SecretsUsedInArgOrEnv flags: a token from the
/// list as the whole name or its first or last `_` word, unless a `public`
/// word is there too.
fn looks_secret(key: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let has = |tokens: &[&str]| {
        let lower = key.to_lowercase();
        tokens.iter().any(|t| {
            lower == *t
                || lower.starts_with(&format!("{t}_"))
                || lower.ends_with(&format!("_{t}"))
                || lower.contains(&format!("_{t}_"))
        })
    };
    has(DENY) && !has(&["public"])
}

/// One stage being dispatched.
pub(super) struct StageDispatch<'a, 'o> {
    df: &'a Dockerfile,
    opts: &'a LintOptions<'o>,
    global: &'a GlobalScope,
    /// What a stage built on this one inherits (the reference's
    /// `dispatchState.init`: state, image, `workdirSet`, `buildArgs`).
    state: StageState,
    cmd: Option<Vec<(usize, usize)>>,
    entrypoint: Option<Vec<(usize, usize)>>,
    healthcheck: Option<Vec<(usize, usize)>>,
}

impl<'a, 'o> StageDispatch<'a, 'o> {
    pub(super) fn new(
        df: &'a Dockerfile,
        opts: &'a LintOptions<'o>,
        global: &'a GlobalScope,
        state: StageState,
    ) -> Self {
        Self {
            df,
            opts,
            global,
            state,
            cmd: None,
            entrypoint: None,
            healthcheck: None,
        }
    }

    /// What a stage built on this one inherits.
    pub(super) fn into_state(self) -> StageState {
        self.state
    }

    /// Expands one word with the stage's environment, reporting each
    /// variable it uses that is neither set nor a declared ARG.
    fn expand(&self, word: &str, escape: char, ins: &Instruction, sink: &mut Sink) -> String {
        let env = &self.state.env;
        let (result, _, unmatched) = expand_tracked(word, escape, &|k| env_get(env, k));
        for var in unmatched {
            if self.state.declared.contains(&var) || NON_ENV_ARGS.contains(&var.as_str()) {
                continue;
            }
            let keys = env
                .iter()
                .map(|kv| kv.split_once('=').map_or(kv.as_str(), |p| p.0));
            let mut detail = format!("Usage of undefined variable '${var}'");
            if let Some(s) = suggest(&var, keys, true) {
                detail.push_str(&format!(" (did you mean ${s}?)"));
            }
            sink.warn(&rules::UNDEFINED_VAR, detail, range_in(self.df, ins));
        }
        result
    }

    /// Dispatches one instruction; an error is one that stops the
    /// reference's dispatch (and so its later checks).
    pub(super) fn instruction(
        &mut self,
        ins: &Instruction,
        written: Option<&str>,
        sink: &mut Sink,
    ) -> Result<(), String> {
        let name = written.unwrap_or(&ins.keyword);
        let esc = self.df.escape;
        match ins.keyword.as_str() {
            "env" | "label" => {
                let pairs = key_value_pairs(&ins.args);
                let expanded: Vec<(String, String)> = pairs
                    .iter()
                    .map(|(k, v, _)| {
                        (
                            self.expand(k, esc, ins, sink),
                            self.expand(v, esc, ins, sink),
                        )
                    })
                    .collect();
                for ((_, _, legacy), (k, v)) in pairs.iter().zip(expanded) {
                    if *legacy {
                        sink.warn(
                            &rules::LEGACY_KEY_VALUE_FORMAT,
                            format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                            range_in(self.df, ins),
                        );
                    }
                    if ins.keyword == "env" {
                        self.secret("ENV", &k, ins, sink);
                        env_set(&mut self.state.env, &k, &v);
                    }
                }
            }
            "add" | "copy" => self.copy(ins, sink),
            "workdir" => {
                let path = self.expand(ins.args.words().join(" ").as_str(), esc, ins, sink);
                if !self.state.workdir_set && !path.starts_with('/') {
                    sink.warn(
                        &rules::WORKDIR_RELATIVE_PATH,
                        format!("Relative workdir {path:?} can have unexpected results if the base image changes"),
                        range_in(self.df, ins),
                    );
                }
                self.state.workdir_set = true;
            }
            "run" => {
                for m in ins.flag_all("mount") {
                    self.expand(m, esc, ins, sink);
                }
            }
            "user" => {
                self.expand(&ins.args.words().join(" "), esc, ins, sink);
            }
            "stopsignal" => {
                let signal = self.expand(&ins.args.words().join(" "), esc, ins, sink);
                if !valid_signal(&signal) {
                    return Err(format!("invalid signal: {signal}"));
                }
            }
            "volume" => {
                for w in ins.args.words() {
                    if self.expand(&w, esc, ins, sink).is_empty() {
                        return Err("VOLUME specified can not be an empty string".into());
                    }
                }
            }
            "cmd" | "entrypoint" => {
                let tracker = if ins.keyword == "cmd" {
                    &mut self.cmd
                } else {
                    &mut self.entrypoint
                };
                used_once(tracker, name, ins, sink);
                if matches!(ins.args, Args::Shell(_)) && !self.state.shell_set {
                    sink.warn(
                        &rules::JSON_ARGS_RECOMMENDED,
                        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        range_in(self.df, ins),
                    );
                }
            }
            "healthcheck" => used_once(&mut self.healthcheck, name, ins, sink),
            "expose" => self.expose(ins, sink),
            "shell" => self.state.shell_set = matches!(&ins.args, Args::Exec(v) if !v.is_empty()),
            "arg" => self.arg(ins, sink),
            _ => {}
        }
        Ok(())
    }

    fn secret(&self, instruction: &str, key: &str, ins: &Instruction, sink: &mut Sink) {
        if looks_secret(key) {
            sink.warn(
                &rules::SECRETS_USED_IN_ARG_OR_ENV,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({instruction} {key:?})"
                ),
                range_in(self.df, ins),
            );
        }
    }

    fn copy(&mut self, ins: &Instruction, sink: &mut Sink) {
        let esc = self.df.escape;
        let is_add = ins.keyword == "add";
        let mut flags = vec!["chown", "chmod"];
        if is_add {
            flags.push("checksum");
        }
        for f in flags {
            self.expand(ins.flag(f).unwrap_or(""), esc, ins, sink);
        }
        let heredoc_names: Vec<&str> = ins.heredocs.iter().map(|h| h.name.as_str()).collect();
        let words: Vec<String> = ins
            .args
            .words()
            .into_iter()
            .filter(|w| !is_heredoc_word(w, &heredoc_names))
            .collect();
        let sources: Vec<String> = words
            .iter()
            .map(|w| self.expand(w, esc, ins, sink))
            .collect();
        for h in &ins.heredocs {
            if !h.quoted {
                self.expand(&h.content, '\\', ins, sink);
            }
        }
        let Some((_, sources)) = sources.split_last() else {
            return;
        };
        let from_context = is_add || ins.flag("from").is_none();
        if let (Some(ignore), true) = (self.opts.ignore, from_context) {
            for src in sources {
                if src.contains("://") || src.starts_with("git@") {
                    continue;
                }
                if ignore.excluded(src) {
                    let verb = if is_add { "Add" } else { "Copy" };
                    sink.warn(
                        &rules::COPY_IGNORED_FILE,
                        format!(
                            "Attempting to {verb} file {src:?} that is excluded by .dockerignore"
                        ),
                        range_in(self.df, ins),
                    );
                }
            }
        }
    }

    fn expose(&self, ins: &Instruction, sink: &mut Sink) {
        let env = &self.state.env;
        let text = match &ins.args {
            Args::Shell(t) => t.clone(),
            Args::Exec(v) => v.join(" "),
        };
        let Ok(ports) = split_words(&text, &|k| env_get(env, k), self.df.escape) else {
            return;
        };
        for raw in ports {
            let parts: Vec<&str> = raw.split(':').collect();
            let (ip, host_port, container) = match parts.as_slice() {
                [c] => ("".to_owned(), "", *c),
                [h, c] => ("".to_owned(), *h, *c),
                [ip @ .., h, c] => (ip.join(":"), *h, *c),
                [] => continue,
            };
            let (port, proto) = container.split_once('/').unwrap_or((container, ""));
            if port.is_empty()
                || !matches!(proto.to_lowercase().as_str(), "" | "tcp" | "udp" | "sctp")
            {
                // The reference stops the build here; strata's own EXPOSE
                // handling reports it.
                return;
            }
            if proto != proto.to_lowercase() {
                sink.warn(
                    &rules::EXPOSE_PROTO_CASING,
                    format!("Defined protocol '{raw}' in EXPOSE instruction should be lowercase"),
                    range_in(self.df, ins),
                );
            }
            if !ip.is_empty() || !host_port.is_empty() {
                sink.warn(
                    &rules::EXPOSE_INVALID_FORMAT,
                    format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{raw}'"),
                    range_in(self.df, ins),
                );
            }
        }
    }

    fn arg(&mut self, ins: &Instruction, sink: &mut Sink) {
        for (key, default) in ins.arg_pairs() {
            self.secret("ARG", &key, ins, sink);
            let value = match (self.opts.inputs.build_args.get(&key), default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(d)) => Some(self.expand(&d, self.df.escape, ins, sink)),
                (None, None) => global_value(self.global, &key),
            };
            if let Some(v) = value
                && !NON_ENV_ARGS.contains(&key.as_str())
            {
                env_set(&mut self.state.env, &key, &v);
            }
            self.state.declared.push(key);
        }
    }
}

/// What moby's `signal.ParseSignal` accepts: a number, or a Linux signal
/// name with or without `SIG`.
fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
    ];
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return s.parse::<u32>().is_ok_and(|n| n > 0);
    }
    let upper = s.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    NAMES.contains(&name)
        || name
            .strip_prefix("RTMIN")
            .or_else(|| name.strip_prefix("RTMAX"))
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', '-']))
}

/// MultipleInstructionsDisallowed points at the earlier instruction, the
/// one that has no effect.
fn used_once(
    tracker: &mut Option<Vec<(usize, usize)>>,
    name: &str,
    ins: &Instruction,
    sink: &mut Sink,
) {
    if let Some(previous) = tracker.take() {
        sink.warn(
            &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED,
            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
            previous,
        );
    }
    *tracker = Some(range(ins));
}

/// `[fd]<<[-]NAME` words that introduce a heredoc source.
fn is_heredoc_word(word: &str, names: &[&str]) -> bool {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    let name: String = rest.chars().filter(|c| !matches!(c, '"' | '\'')).collect();
    names.contains(&name.as_str())
}

/// ENV/LABEL `(key, value, legacy)` words, unexpanded: `KEY VALUE...` (the
/// legacy form, one pair) when the first word has no `=`, else `K=V` words.
fn key_value_pairs(args: &Args) -> Vec<(String, String, bool)> {
    let words = args.words();
    match words.first() {
        None => Vec::new(),
        Some(first) if !first.contains('=') => {
            let text = match args {
                Args::Shell(t) => t.as_str(),
                Args::Exec(_) => "",
            };
            let rest = text
                .trim_start()
                .split_once(char::is_whitespace)
                .map_or("", |p| p.1.trim_start());
            vec![(first.clone(), rest.to_owned(), true)]
        }
        Some(_) => words
            .iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned(), false),
                None => (w.clone(), String::new(), false),
            })
            .collect(),
    }
}
