//! Named contexts (`--build-context NAME=VALUE`) in a build: the image
//! state each gives, once per build and platform (which names they stand
//! for and which stages they replace: [`crate::named_context`]).

use std::time::Instant;

use strata_frontend::{Instruction, Platform};

use super::{Solver, State};
use crate::api::{Event, NamedContext};
use crate::cache::{CACHE_VERSION, key_of};
use crate::context;
use crate::error::{Result, io};

impl Solver<'_> {
    /// [`crate::named_context::named_context`] for this build.
    pub(crate) fn named_context(&self, name: &str) -> Option<(String, &NamedContext)> {
        crate::named_context::named_context(self.opts, name)
    }

    /// The image state named context `name` gives for `platform`, made once
    /// per build: an image's layers and config, or a directory's files as
    /// one layer on an empty image.
    pub(crate) fn named_state(
        &self,
        name: &str,
        named: &NamedContext,
        ins: &Instruction,
        platform: &Platform,
    ) -> Result<State> {
        let cell = self
            .shared
            .named
            .lock()
            .expect("named contexts")
            .entry(format!("{name} {platform}"))
            .or_default()
            .clone();
        let mut once = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = once.as_ref() {
            return Ok(s.clone());
        }
        // Not a stage's: `--no-cache-filter` names stages, not contexts.
        let own_stage = usize::MAX;
        let state = match named {
            NamedContext::Image(image) => self.image_state(image, ins, platform, own_stage)?,
            NamedContext::Dir(dir) => self.dir_state(name, dir, platform, own_stage)?,
        };
        *once = Some(state.clone());
        Ok(state)
    }

    /// A directory context as a step of its own (`[context NAME] load from
    /// client`, BuildKit's words): its files hashed (with the stat cache the
    /// build context uses), then, unless a build cached that content
    /// already, copied into a layer on an empty image.
    fn dir_state(
        &self,
        name: &str,
        dir: &std::path::Path,
        platform: &Platform,
        stage: usize,
    ) -> Result<State> {
        let n = self.next_step();
        self.emit(Event::Step {
            n,
            name: format!("[{}context {name}] load from client", self.progress.label),
        });
        let start = Instant::now();
        match self.dir_layer(name, dir, platform, stage) {
            Ok((state, cached)) => {
                self.emit(if cached {
                    Event::Cached { n }
                } else {
                    Event::Done {
                        n,
                        seconds: start.elapsed().as_secs_f64(),
                    }
                });
                Ok(state)
            }
            Err(e) => {
                self.emit(Event::Error {
                    n,
                    message: crate::error::chain(&e),
                });
                Err(e)
            }
        }
    }

    fn dir_layer(
        &self,
        name: &str,
        dir: &std::path::Path,
        platform: &Platform,
        stage: usize,
    ) -> Result<(State, bool)> {
        // The context's own `.dockerignore` (never a Dockerfile's), as
        // BuildKit reads it for a local named context.
        let ignore = context::Ignore::load(dir, "")?;
        let hashes = context::HashCache::load(self.store, dir)?;
        let mut h = blake3::Hasher::new();
        let hashed = context::hash_tree(dir, "", Some(&ignore), None, Some(&hashes), &mut h);
        hashes.save(self.store)?;
        hashed?;
        let mut state = self.scratch_state(stage, platform);
        let key = key_of(&[
            CACHE_VERSION,
            b"named context dir",
            state.key.as_bytes(),
            h.finalize().as_bytes(),
        ]);
        let _once = super::once::claim(&key);
        if self.cache_hit(&key, &mut state)? {
            return Ok((state, true));
        }
        let scratch = self.scratch()?;
        let layer_root = scratch.path().join("root");
        std::fs::create_dir_all(&layer_root).map_err(io("creating a layer dir"))?;
        crate::copy::copy_named_dir(dir, &layer_root, &ignore)?;
        let changes = strata_oci::layer::changes_for_tree(&layer_root)
            .map_err(crate::error::context("listing the layer"))?;
        let layer = if changes.is_empty() {
            None
        } else {
            let l = self.write_layer(&layer_root, &changes)?;
            self.adopt_snapshot(&l, &layer_root)?;
            Some(l)
        };
        self.finish_step(
            &key,
            layer,
            &mut state,
            format!("[context {name}] load from client"),
        )?;
        Ok((state, false))
    }
}
