//! One instruction: RUN and COPY/ADD handed to their modules, every other
//! one applied to the config by [`crate::config::apply_instruction`]; a
//! WORKDIR whose directory is missing becomes a cached layer.

use std::collections::BTreeMap;

use strata_frontend::{Instruction, StageScope};

use super::{Solver, State};
use crate::cache::key_of;
use crate::config::{ArgScope, ConfigState, apply_instruction};
use crate::error::Result;

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
        // WORKDIR creates a missing directory (and its missing parents) as a
        // layer, owned by the current USER, as BuildKit does; a cached step
        // like COPY, so a rebuild neither looks nor writes again.
        if let Some(dir) = applied.workdir {
            let user = state.config.config.user.clone().unwrap_or_default();
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
            .push_step(None, Some(self.dates.created.clone()), history.clone());
        state.key = key_of(&[state.key.as_bytes(), history.as_bytes()]);
        Ok(false)
    }
}
