//! FROM: base images from the store or a registry, scratch, earlier stages.

use strata_frontend::{DEFAULT_PATH, Instruction, Stage, StageScope};
use strata_image::registry::Naming;
use strata_oci::image::ImageConfig;
use strata_store::ImageRecord;

use super::{Solver, State};
use crate::api::Event;
use crate::cache::{CACHE_VERSION, key_of};
use crate::error::{Result, context, other};

/// Whether an image for `have` serves a build for `want`: containerd's
/// `platforms.Only(want)`, as Docker checks a stored image against
/// `--platform` (an arm/v6 image runs on arm/v7, a 386 one on amd64).
pub(crate) fn platform_fits(
    have: &strata_frontend::Platform,
    want: &strata_frontend::Platform,
) -> bool {
    want.matches(have)
}

/// What the provenance records of a base image: the name as written, the
/// platform it was used for, and the digest it was pulled by (the index's,
/// as BuildKit pins it) when the store knows one for that repository, else
/// its manifest's.
fn material(
    name: &str,
    want: &strata_frontend::Platform,
    img: &ImageRecord,
) -> crate::provenance::ImageMaterial {
    let repo = strata_oci::reference::Reference::parse(name)
        .ok()
        .map(|r| format!("{}@", r.name()));
    let pulled_by = repo.and_then(|repo| {
        img.repo_digests
            .iter()
            .find_map(|d| d.strip_prefix(&repo)?.parse::<strata_oci::Digest>().ok())
    });
    crate::provenance::ImageMaterial {
        name: name.to_owned(),
        platform: want.normalized(),
        digest: pulled_by.unwrap_or(img.manifest),
    }
}

impl Solver<'_> {
    /// An image by name for FROM or `--from`: from the store, else (or with
    /// `--pull`, once per build) from its registry; held in the build's
    /// lease from here on, so a concurrent `rmi` + `prune` cannot free it.
    pub(crate) fn image(
        &self,
        name: &str,
        ins: &Instruction,
        want: &strata_frontend::Platform,
    ) -> Result<ImageRecord> {
        let img = self.find_image(name, ins, want)?;
        let lock = self.store.lock()?;
        self.lease
            .hold_image(self.store, &lock, &img, name)
            .map_err(|e| self.fail(ins, &e.to_string()))?;
        drop(lock);
        self.shared
            .materials
            .lock()
            .expect("materials")
            .push(material(name, want, &img));
        Ok(img)
    }

    fn find_image(
        &self,
        name: &str,
        ins: &Instruction,
        want: &strata_frontend::Platform,
    ) -> Result<ImageRecord> {
        // An image ID (a named context of bake's `target:` or a loaded
        // `oci-layout://`) names an image of this store; nothing to pull.
        if name.parse::<strata_oci::Digest>().is_ok() {
            return self
                .store
                .resolve(name)
                .map_err(|e| self.fail(ins, &format!("image {name}: {e}")));
        }
        // A once-cell per image and platform, held throughout: two stages
        // pulling the same image resolve it once (`--pull` pulls each image
        // once per build); stages pulling different images do not wait on
        // each other. Blobs are fetched once across processes by the pull's
        // own per-blob locks.
        let key = format!("{name} {want}");
        let cell = self
            .shared
            .pulled
            .lock()
            .expect("pulled map")
            .entry(key)
            .or_default()
            .clone();
        let mut pulled_once = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = pulled_once.as_ref() {
            return Ok(img.clone());
        }
        // The host's platform is what names in the store stand for; another
        // platform's image is pulled unnamed, so it is used from the store
        // only when the name happens to be stored for that platform.
        let foreign = *want != self.plan.inputs.build_platform;
        let local = self.store.resolve(name);
        let stored_platform = match &local {
            Ok(img) if foreign => Some(self.platform_of(img)?),
            _ => None,
        };
        let local_fits = stored_platform
            .as_ref()
            .is_none_or(|p| platform_fits(p, want));
        if !self.opts.pull
            && local_fits
            && let Ok(img) = &local
        {
            return Ok(img.clone());
        }
        let stored_note = stored_platform
            .as_ref()
            .map(|p| format!("; the store has it for {p}, not {want}"))
            .unwrap_or_default();
        let Some(client) = self.opts.registry.clone() else {
            return Err(self.fail(
                ins,
                &match &local {
                    Ok(_) => format!("image {name:?} is needed for {want}{stored_note}, and pulling is off"),
                    Err(e) => format!("image {name:?} is not in the local store ({e}) and pulling is off; load it with `strata load`, `strata import` or `strata pull`"),
                },
            ));
        };
        let reference = match strata_oci::reference::Reference::parse(name) {
            Ok(r) => r,
            // Not a reference (an image ID, say): only the store can have it.
            Err(e) => {
                return match local {
                    Ok(img) if local_fits => Ok(img),
                    _ => Err(self.fail(ins, &format!("{e}{stored_note}"))),
                };
            }
        };
        let n = self.next_step();
        self.emit(Event::Step {
            n,
            name: if foreign {
                format!("[internal] pull {reference} for {want}")
            } else {
                format!("[internal] pull {reference}")
            },
        });
        let start = std::time::Instant::now();
        // A foreign platform's image is pulled unnamed (see `Naming`).
        let (platform, naming) = if foreign {
            (want.clone(), Naming::Unnamed)
        } else {
            (strata_registry::host_platform(), Naming::Tagged)
        };
        let pulled = strata_image::registry::pull(
            self.store,
            self.lease,
            &client,
            &reference,
            &platform,
            naming,
            &|_| {},
        )
        .map_err(|e| {
            let e = crate::error::chain(&e);
            self.emit(Event::Error {
                n,
                message: e.clone(),
            });
            let whom = if foreign {
                format!("{name} for {want}")
            } else {
                name.to_owned()
            };
            self.fail(ins, &format!("pulling {whom}: {e}{stored_note}"))
        })?;
        self.emit(Event::Output {
            n,
            data: format!("resolved {} to {}\n", reference, pulled.digest).into_bytes(),
        });
        self.emit(Event::Done {
            n,
            seconds: start.elapsed().as_secs_f64(),
        });
        *pulled_once = Some(pulled.image.clone());
        Ok(pulled.image)
    }

    /// The platform an image's config says it is for.
    pub(crate) fn platform_of(&self, img: &ImageRecord) -> Result<strata_frontend::Platform> {
        let raw = self.store.read_blob(&img.id)?;
        let config =
            ImageConfig::from_json(&raw).map_err(context(format!("config of image {}", img.id)))?;
        Ok(strata_frontend::Platform::new(
            &config.platform.os,
            &config.platform.architecture,
            config.platform.variant.as_deref(),
        )
        .normalized())
    }

    /// The platform a stage builds for: its `FROM --platform`, else the
    /// build's target.
    pub(crate) fn stage_platform(&self, stage: &Stage) -> strata_frontend::Platform {
        stage
            .platform
            .clone()
            .unwrap_or_else(|| self.plan.inputs.target_platform.clone())
    }

    /// An empty image for `platform` (`FROM scratch`), as BuildKit's
    /// `emptyImage`.
    pub(crate) fn scratch_state(&self, stage: usize, p: &strata_frontend::Platform) -> State {
        let mut config = ImageConfig::new(&p.os, &p.architecture);
        config.platform.variant = p.variant.clone();
        config.config.env = Some(vec![DEFAULT_PATH.into()]);
        // BuildKit's `emptyImage` starts at `/` (an image FROM an
        // image without WorkingDir keeps none).
        config.config.working_dir = Some("/".into());
        // The platform is in the key: the same steps on an empty base
        // make a different image config for each platform.
        State {
            layers: Vec::new(),
            config,
            key: key_of(&[CACHE_VERSION, b"scratch", p.to_string().as_bytes()]),
            base_image: None,
            stage,
            cmd_set: false,
            args: StageScope::new(),
        }
    }

    pub(crate) fn base(&self, stage: &Stage, all: &[Stage]) -> Result<State> {
        if stage.base == "scratch" {
            return Ok(self.scratch_state(stage.index, &self.stage_platform(stage)));
        }
        let lower = stage.base.to_lowercase();
        if let Some(s) = all
            .iter()
            .find(|s| s.index < stage.index && s.name.as_deref() == Some(lower.as_str()))
        {
            let mut st = self
                .schedule
                .done
                .lock()
                .expect("done map")
                .get(&s.index)
                .cloned()
                .ok_or_else(|| other(format!("stage {} was not built", stage.base)))?;
            st.stage = stage.index;
            st.cmd_set = false;
            return Ok(st);
        }
        let wanted = self.stage_platform(stage);
        if let Some((name, named)) = self.named_context(&stage.base) {
            let mut st = self.named_state(&name, named, &stage.from, &wanted)?;
            st.stage = stage.index;
            return Ok(st);
        }
        self.image_state(&stage.base, &stage.from, &wanted, stage.index)
    }

    /// The state of image `name` (from the store or its registry) as a base.
    pub(crate) fn image_state(
        &self,
        name: &str,
        ins: &Instruction,
        wanted: &strata_frontend::Platform,
        stage: usize,
    ) -> Result<State> {
        let img = self.image(name, ins, wanted)?;
        let raw = self.store.read_blob(&img.id)?;
        let mut config =
            ImageConfig::from_json(&raw).map_err(context(format!("config of {name}")))?;
        if config.config.env.is_none() {
            config.config.env = Some(vec![DEFAULT_PATH.into()]);
        }
        Ok(State {
            layers: img.layers.clone(),
            config,
            key: key_of(&[CACHE_VERSION, b"image", img.id.to_string().as_bytes()]),
            base_image: Some(img.id),
            stage,
            cmd_set: false,
            args: StageScope::new(),
        })
    }
}
