//! Stages on threads in dependency order, and the steps of one stage.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use strata_frontend::{Instruction, Stage};

use super::{Solver, State};
use crate::api::Event;
use crate::error::{BuildError, Result};

impl Solver<'_> {
    /// Runs the needed stages, each on its own thread as soon as the stages
    /// it depends on are done, at most `jobs` at once (0: one per core). The
    /// first failure cancels the rest: waiting stages never start, running
    /// ones stop before their next instruction; that failure is returned.
    pub(crate) fn run_stages(&self, stages: &[Stage], needed: &[usize], jobs: usize) -> Result<()> {
        let jobs = if jobs == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            jobs
        };
        let deps: HashMap<usize, Vec<usize>> = needed
            .iter()
            .map(|&i| (i, self.plan.graph.stage_deps(i)))
            .collect();
        let running = Mutex::new(0usize);
        let slot_free = Condvar::new();
        let failure: Mutex<Option<BuildError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for &idx in needed {
                let deps = deps.get(&idx).cloned().unwrap_or_default();
                let (running, slot_free, failure) = (&running, &slot_free, &failure);
                s.spawn(move || {
                    // Wait for the stages this one reads.
                    {
                        let mut done = self.schedule.done.lock().expect("done map");
                        while !self.schedule.cancelled.load(Ordering::SeqCst)
                            && !deps.iter().all(|d| done.contains_key(d))
                        {
                            done = self.schedule.stage_done.wait(done).expect("done map");
                        }
                    }
                    // Then for a job slot.
                    {
                        let mut n = running.lock().expect("job slots");
                        while *n >= jobs && !self.schedule.cancelled.load(Ordering::SeqCst) {
                            n = slot_free.wait(n).expect("job slots");
                        }
                        *n += 1;
                    }
                    let result = if self.schedule.cancelled.load(Ordering::SeqCst) {
                        Err(BuildError::Cancelled)
                    } else {
                        self.stage(&stages[idx], stages)
                    };
                    *running.lock().expect("job slots") -= 1;
                    slot_free.notify_all();
                    match result {
                        Ok(state) => {
                            self.schedule
                                .done
                                .lock()
                                .expect("done map")
                                .insert(idx, state);
                        }
                        Err(BuildError::Cancelled) => {}
                        Err(e) => {
                            failure.lock().expect("failure").get_or_insert(e);
                            self.schedule.cancelled.store(true, Ordering::SeqCst);
                            slot_free.notify_all();
                        }
                    }
                    self.schedule.stage_done.notify_all();
                });
            }
        });
        match failure.into_inner().expect("failure") {
            Some(e) => Err(e),
            // Cancelled from outside (BuildOptions::cancel), nothing failed.
            None if self.schedule.cancelled.load(Ordering::SeqCst) => Err(BuildError::Cancelled),
            None => Ok(()),
        }
    }

    pub(crate) fn stage(&self, stage: &Stage, all: &[Stage]) -> Result<State> {
        let pl = &self.progress.label;
        // A named context of the stage's name replaces it: none of its
        // instructions run (BuildKit marks such a stage dispatched).
        if let Some((name, named)) = stage.name.as_deref().and_then(|n| self.named_context(n)) {
            let mut state =
                self.named_state(&name, named, &stage.from, &self.stage_platform(stage))?;
            state.stage = stage.index;
            return Ok(state);
        }
        let n = self.next_step();
        let first_label = |total: usize| match &stage.name {
            Some(name) => format!("[{pl}{name} 1/{total}]"),
            None => format!("[{pl}stage-{} 1/{total}]", stage.index),
        };
        self.emit(Event::Step {
            n,
            name: format!(
                "{} FROM {}",
                first_label(stage.instructions.len() + 1),
                stage.base
            ),
        });
        let start = Instant::now();
        let mut state = self.base(stage, all)?;
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        // The base's ONBUILD triggers run first, as if written right after
        // FROM, and are not passed on to images built from this one.
        let triggers = self.onbuild_triggers(stage, &mut state)?;
        let steps: Vec<(&Instruction, bool)> = triggers
            .iter()
            .map(|i| (i, true))
            .chain(stage.instructions.iter().map(|i| (i, false)))
            .collect();
        let total = steps.len() + 1;
        let label = |i: usize| match &stage.name {
            Some(n) => format!("[{pl}{n} {i}/{total}]"),
            None => format!("[{pl}stage-{} {i}/{total}]", stage.index),
        };
        // A stage FROM another stage starts with that stage's ARGs.
        let mut args = std::mem::take(&mut state.args);
        for (i, (ins, trigger)) in steps.into_iter().enumerate() {
            if self.schedule.cancelled.load(Ordering::SeqCst) {
                return Err(BuildError::Cancelled);
            }
            let n = self.next_step();
            let name = format!(
                "{} {}{}",
                label(i + 2),
                if trigger { "ONBUILD " } else { "" },
                ins.source_form()
            );
            self.emit(Event::Step { n, name });
            let start = Instant::now();
            let r = self.instruction(n, ins, &mut state, &mut args);
            match r {
                Ok(cached) => {
                    if cached {
                        self.emit(Event::Cached { n });
                    } else {
                        self.emit(Event::Done {
                            n,
                            seconds: start.elapsed().as_secs_f64(),
                        });
                    }
                }
                Err(e) => {
                    self.emit(Event::Error {
                        n,
                        message: crate::error::chain(&e),
                    });
                    return Err(e);
                }
            }
        }
        state.args = args;
        Ok(state)
    }

    /// Takes the base image's ONBUILD triggers out of `state` and parses them
    /// as instructions placed on the FROM line (where errors point).
    pub(crate) fn onbuild_triggers(
        &self,
        stage: &Stage,
        state: &mut State,
    ) -> Result<Vec<Instruction>> {
        let Some(texts) = state
            .config
            .config
            .on_build
            .take()
            .filter(|t| !t.is_empty())
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for text in texts {
            let parsed =
                strata_frontend::parse(&format!("{text}\n"), &self.plan.df.file).map_err(|d| {
                    self.fail(
                        &stage.from,
                        &format!("ONBUILD trigger {text:?} of the base image: {}", d.message),
                    )
                })?;
            for mut ins in parsed.instructions {
                if matches!(ins.keyword.as_str(), "onbuild" | "from" | "maintainer") {
                    return Err(self.fail(
                        &stage.from,
                        &format!(
                            "{} is not allowed as an ONBUILD trigger",
                            ins.keyword.to_uppercase()
                        ),
                    ));
                }
                ins.line = stage.from.line;
                ins.end_line = stage.from.end_line;
                out.push(ins);
            }
        }
        Ok(out)
    }
}
