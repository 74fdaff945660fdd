//! RUN: one process in a container on the state's layers; its changes
//! become the step's layer.

use std::sync::atomic::Ordering;

use strata_frontend::{Args, Instruction, StageScope, env_get};

use super::{PIPES, Solver, State};
use crate::api::Event;
use crate::cache::key_of;
use crate::emulation;
use crate::error::{BuildError, Result, other};

impl Solver<'_> {
    pub(crate) fn run_step(
        &self,
        n: usize,
        ins: &Instruction,
        state: &mut State,
        args: &StageScope,
    ) -> Result<bool> {
        let cfg = &state.config.config;
        let shell = cfg
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        // A lone heredoc that starts with `#!` is a script run by its own
        // interpreter: BuildKit mounts it read-only at /dev/pipes/NAME and
        // hands that path to the shell instead of the text.
        let mut script: Option<(String, String)> = None;
        let argv: Vec<String> = match &ins.args {
            Args::Exec(v) => v.clone(),
            Args::Shell(s) => {
                let mut text = s.clone();
                if let Some(h) = ins.heredocs.first() {
                    let marker_only = s
                        .trim()
                        .trim_start_matches("<<")
                        .trim_start_matches('-')
                        .trim_matches(|c| c == '"' || c == '\'')
                        == h.name;
                    if marker_only && h.content.starts_with("#!") {
                        script = Some((h.name.clone(), h.content.clone()));
                    }
                    text = if marker_only {
                        h.content.clone()
                    } else {
                        // The shell reads the heredoc itself, as BuildKit passes it.
                        let mut t = s.clone();
                        for h in &ins.heredocs {
                            t.push('\n');
                            t.push_str(&h.content);
                            t.push_str(&h.name);
                        }
                        t
                    };
                }
                if let Some((name, _)) = &script {
                    text = format!("{PIPES}/{name}");
                }
                shell.iter().cloned().chain(std::iter::once(text)).collect()
            }
        };
        // ARGs are visible to RUN (and to its cache key) but never persisted;
        // one set after an ENV of its name wins (`StageScope::step_env`).
        let mut env = args.step_env(&cfg.env.clone().unwrap_or_default());
        let cwd = cfg
            .working_dir
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "/".into());
        let user = cfg.user.clone().unwrap_or_default();
        let network = match ins.flag("network") {
            None | Some("default") => self.opts.network,
            Some("none") => strata_exec::Network::None,
            Some("host") => strata_exec::Network::Host,
            Some(o) => {
                return Err(self.fail(
                    ins,
                    &format!("--network={o}: expected default, none or host"),
                ));
            }
        };
        match ins.flag("security") {
            None | Some("sandbox") => {}
            Some("insecure") => {
                return Err(self.fail(
                    ins,
                    "--security=insecure: strata has no privileged mode: every step runs with \
                     Docker's default capabilities (the security.insecure entitlement cannot be granted)",
                ));
            }
            Some(o) => {
                return Err(self.fail(
                    ins,
                    &format!("--security={o}: expected sandbox or insecure"),
                ));
            }
        }
        let mut mounts = self.run_mounts(&self.expand_mounts(ins, &env)?, &cwd)?;
        // Kept until the step has run: the script's read-only mount source.
        let _pipes = match &script {
            Some((name, content)) => {
                use std::os::unix::fs::PermissionsExt as _;
                let dir = self.scratch()?;
                let file = dir.path().join(name);
                fs_err::write(&file, content)?;
                fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o755))?;
                mounts
                    .key
                    .extend(format!("heredoc script {name}\0{content}\0").as_bytes());
                mounts.mounts.push(strata_exec::Mount::Bind {
                    target: PIPES.into(),
                    source: dir.path().to_owned(),
                    readwrite: false,
                });
                Some(dir)
            }
            None => None,
        };
        let argv_json = serde_json::to_vec(&argv).unwrap_or_default();
        let key = key_of(&[
            state.key.as_bytes(),
            b"RUN",
            &argv_json,
            env.join("\0").as_bytes(),
            cwd.as_bytes(),
            user.as_bytes(),
            format!("{network:?}").as_bytes(),
            &mounts.key,
            // What the step sees in /etc/hosts and /dev/shm, and its
            // limits, can change its result (no limits: the key as before).
            format!(
                "{:?} {:?}{}",
                self.opts.extra_hosts,
                self.opts.shm_size,
                self.opts
                    .ulimits
                    .iter()
                    .map(|u| format!(" ulimit {u}"))
                    .chain(
                        self.opts
                            .cgroup_parent
                            .iter()
                            .map(|p| format!(" cgroup-parent {p}"))
                    )
                    .collect::<String>()
            )
            .as_bytes(),
        ]);
        // `RUN |N K=V ... argv`, as the reference writes it; proxy build
        // args that no ARG declares are not in it.
        let prefix = args.history_prefix(&|k| env_get(&env, k));
        let history = if prefix.is_empty() {
            format!("RUN {} # buildkit", argv.join(" "))
        } else {
            format!("RUN {prefix} {} # buildkit", argv.join(" "))
        };
        let _once = super::once::claim(&key);
        if self.cache_hit(&key, state)? {
            return Ok(true);
        }
        self.materialise_mounts(&mut mounts, ins)?;
        // Proxy build args reach the step without an ARG, in both cases, and
        // stay out of its cache key as in the reference (`ProxyEnv`).
        for p in self.plan.inputs.proxy_env() {
            if let Some((k, _)) = p.split_once('=')
                && env_get(&env, k).is_none()
            {
                env.push(p);
            }
        }
        if let Some(why) = emulation::missing_emulator(&state.config) {
            return Err(self.fail(ins, &why));
        }
        let lowers = self.lowers(&state.layers)?;
        let scratch = self.scratch()?;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let spec = strata_exec::RunSpec {
            lowers,
            scratch_dir: scratch.path().to_owned(),
            argv: argv.clone(),
            env,
            cwd,
            user,
            hostname: "buildkitsandbox".into(),
            // BuildKit's RUN has no /etc/hostname and no $HOSTNAME.
            provide_hostname: false,
            network,
            mounts: mounts.mounts,
            extra_hosts: self.opts.extra_hosts.clone(),
            shm_size: self.opts.shm_size,
            output: Box::new(move |_s, data| {
                let _ = tx.send(data.to_vec());
            }),
            // The first failing stage kills the steps running in the others.
            cancel: Some(self.schedule.cancelled.clone()),
            stdin: None,
            seccomp: true,
            ulimits: self.opts.ulimits.clone(),
        };
        let outcome = std::thread::scope(|s| {
            let opts = strata_exec::RunOptions {
                isolation: self.opts.isolation,
                cgroup_parent: self.opts.cgroup_parent.clone(),
                ..Default::default()
            };
            let h = s.spawn(move || strata_exec::run_with(spec, &opts));
            for data in rx {
                self.emit(Event::Output { n, data });
            }
            h.join()
        })
        .map_err(|_| other("the executor thread panicked"))?
        .map_err(|e| match e {
            strata_exec::ExecError::Cancelled => BuildError::Cancelled,
            e => BuildError::from(e),
        })?;
        self.counts.run.fetch_add(1, Ordering::Relaxed);
        let code = match outcome.status {
            strata_exec::ExitStatus::Code(0) => None,
            strata_exec::ExitStatus::Code(c) => Some(c),
            strata_exec::ExitStatus::Signal(s) => Some(128 + s),
        };
        if let Some(code) = code {
            return Err(BuildError::StepFailed {
                file: self.plan.df.file.clone(),
                line: ins.line,
                instruction: format!("RUN {}", ins.text),
                command: argv.join(" "),
                code,
            });
        }
        let changes = outcome.upper.changes()?;
        // A RUN is a layer even when it changed nothing (an empty one), as
        // BuildKit commits every RUN `withLayer`.
        let layer = Some(self.write_layer(outcome.upper.root(), &changes)?);
        // The upperdir becomes the new layer's snapshot: the next step mounts
        // it as is, and its files are not deleted one by one now (on a disk
        // with online discard that is most of a big step's cost).
        match &layer {
            Some(l) if !self.store.snapshot_ready(&l.diff_id)? => {
                let _making = self
                    .store
                    .key_lock(strata_store::KeyKind::Snapshot, &l.diff_id)?;
                if self.store.snapshot_ready(&l.diff_id)? {
                    // Another build made it meanwhile.
                    drop(outcome);
                } else {
                    let dir = self.store.snapshot_dir(&l.diff_id);
                    if dir.exists() {
                        strata_exec::snapshot::remove_tree(&dir)?;
                    }
                    if outcome.upper.into_snapshot(&dir)? {
                        self.store.snapshot_done(&self.store.lock()?, &l.diff_id)?;
                    }
                }
            }
            _ => drop(outcome),
        }
        self.finish_step(&key, layer, state, history)?;
        Ok(false)
    }
}
