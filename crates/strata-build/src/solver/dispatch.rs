//! One instruction: RUN and COPY/ADD handed to their modules, every other
//! one applied to the config by [`crate::config::apply_instruction`]; a
//! WORKDIR other than `/` becomes a cached layer.

use std::collections::BTreeMap;

use strata_frontend::{Instruction, StageScope};

use super::{Solver, State};
use crate::cache::key_of;
use crate::config::{ArgScope, ConfigState, apply_instruction};
use crate::error::Result;
use strata_store::LayerRecord;

impl Solver<'_> {
    /// Runs one instruction; returns whether it was a cache hit.
    pub(crate) fn instruction(
        &self,
        n: usize,
        ins: &Instruction,
        state: &mut State,
        args: &mut StageScope,
    ) -> Result<bool> {
        match ins.keyword.as_str() {
            "run" => return self.run_step(n, ins, state, args),
            "copy" | "add" => {
                let values: BTreeMap<String, String> = args.env().into_iter().collect();
                return self.copy_step(ins, state, &values);
            }
            _ => {}
        }
        let applied = apply_instruction(
            ConfigState {
                config: &mut state.config,
                cmd_set: &mut state.cmd_set,
            },
            ins,
            ArgScope {
                stage: args,
                global: &self.plan.global,
                inputs: &self.plan.inputs,
            },
            self.plan.df.escape,
        )
        .map_err(|e| self.fail(ins, &e.0))?;
        let history = applied.history;
        // WORKDIR is a layer, as in BuildKit, which makes the directory
        // (and its missing parents, owned by the current USER) with a
        // FileOp mkdir and commits it even when the directory was there
        // already (an empty layer then); only `WORKDIR /` has none. A
        // cached step like COPY, so a rebuild neither looks nor writes
        // again.
        if let Some(dir) = applied.workdir.filter(|d| d != "/") {
            let user = state.config.config.user.clone().unwrap_or_default();
            let key = key_of(&[state.key.as_bytes(), history.as_bytes(), user.as_bytes()]);
            if self.cache_hit(&key, state)? {
                return Ok(true);
            }
            let layer = match self.workdir_layer(&dir, &user, state, ins)? {
                Some(layer) => layer,
                None => self.empty_layer()?,
            };
            self.finish_step(&key, Some(layer), state, history)?;
            return Ok(false);
        }
        if applied.recorded {
            state
                .config
                .push_step(None, Some(self.dates.created.clone()), history.clone());
        }
        state.key = key_of(&[state.key.as_bytes(), history.as_bytes()]);
        Ok(false)
    }

    /// `ins` with the values of its `--mount` options expanded in the step's
    /// environment `env` (`type=$T,target=${DIR}`), as BuildKit's
    /// `ParseMount` does with its expander; `from=` is left as written (the
    /// stage graph is computed before expansion).
    pub(crate) fn expand_mounts(&self, ins: &Instruction, env: &[String]) -> Result<Instruction> {
        let lookup = |k: &str| strata_frontend::env_get(env, k);
        let escape = self.plan.df.escape;
        let mut out = ins.clone();
        for (name, value) in &mut out.flags {
            let Some(spec) = value.as_mut().filter(|_| name == "mount") else {
                continue;
            };
            let mut fields = Vec::new();
            for field in spec.split(',') {
                match field.split_once('=') {
                    Some((k, v)) if !k.trim().eq_ignore_ascii_case("from") => {
                        let v = strata_frontend::expand_word(v, &lookup, escape)
                            .map_err(|e| self.fail(ins, &format!("--mount={spec}: {e}")))?;
                        fields.push(format!("{k}={v}"));
                    }
                    _ => fields.push(field.to_owned()),
                }
            }
            *spec = fields.join(",");
        }
        Ok(out)
    }

    /// A layer with no entries, for a step BuildKit commits as a layer
    /// though it changed nothing (a WORKDIR that exists, a RUN that writes
    /// nothing): the image keeps one history entry per layer as there.
    pub(crate) fn empty_layer(&self) -> Result<LayerRecord> {
        let scratch = self.scratch()?;
        let root = scratch.path().join("root");
        fs_err::create_dir(&root)?;
        let layer = self.write_layer(&root, &[])?;
        self.adopt_snapshot(&layer, &root)?;
        Ok(layer)
    }
}
