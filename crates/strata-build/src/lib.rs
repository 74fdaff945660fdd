//! The solver behind `strata build`: walks the stages the target needs in
//! dependency order, computes each step's content-addressed cache key, runs or
//! reuses steps, implements COPY semantics and the exporters. It reports
//! progress through [`Event`]s and never prints.

pub mod annotations;
mod api;
pub mod cache;
mod checks;
pub mod config;
mod context;
mod copy;
mod emulation;
mod error;
mod export;
mod mounts;
mod named_context;
pub mod provenance;
mod sbom;
mod solver;

use std::collections::BTreeMap;
use std::path::Path;

use strata_frontend::{BuildInputs, DEFAULT_PATH, Diagnostic};
use strata_oci::image::ImageConfig;
use strata_store::Store;

use solver::{PlatformBuild, build_platform};

pub use cache::remote as remote_cache;

pub use api::{
    Attestations, BuildOptions, BuildResult, Event, InternalWork, NamedContext, Output, OutputKind,
    PREDICATE_SPDX, PlatformProvenance, PlatformSbom, SbomRequest, named_context_name,
};
pub use checks::check;
pub use error::{BuildError, chain as error_chain};
use error::{Result, other};
pub use export::{
    DOCKER_MANIFEST_LISTS, check_outputs, describe as describe_output, parse_output,
    registry_upload,
};

/// The build epoch and where it came from: SOURCE_DATE_EPOCH (env or build
/// arg), else the commit time of HEAD when the context is a git work tree,
/// else 0.
pub fn build_epoch(context: &Path, build_args: &BTreeMap<String, String>) -> (i64, &'static str) {
    if let Some(v) = build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        && let Ok(n) = v.trim().parse::<i64>()
    {
        return (n, "SOURCE_DATE_EPOCH");
    }
    let git = std::process::Command::new("git")
        .args(["-C"])
        .arg(context)
        .args(["log", "-1", "--format=%ct"])
        .stderr(std::process::Stdio::null())
        .output();
    if let Ok(out) = git
        && out.status.success()
        && let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>()
    {
        return (n, "git HEAD commit time");
    }
    (0, "default (no SOURCE_DATE_EPOCH, no git)")
}

/// The resolved plan of a build as text (`strata build --print`), without
/// running anything: base images' ENV comes from the store when it has
/// them (nothing is pulled).
pub fn plan(store: &Store, opts: &BuildOptions) -> Result<String> {
    let dockerfile = |d: Diagnostic| BuildError::Dockerfile(Box::new(d));
    let df = strata_frontend::parse(&opts.dockerfile, &opts.dockerfile_name).map_err(dockerfile)?;
    let inputs = BuildInputs::host(opts.build_args.clone());
    let (global, stages) = strata_frontend::stages(&df, &inputs).map_err(dockerfile)?;
    let graph = strata_frontend::graph(&df, &stages, opts.target.as_deref()).map_err(|d| {
        if d.source_line.is_empty() {
            other(d.message)
        } else {
            dockerfile(d)
        }
    })?;
    let graph = named_context::without_replaced_stages(graph, &stages, opts);
    let base_env = |name: &str| -> Option<Vec<String>> {
        let name = match named_context::named_context(opts, name) {
            Some((_, NamedContext::Image(image))) => image.as_str(),
            Some((_, NamedContext::Dir(_))) => return Some(vec![DEFAULT_PATH.to_owned()]),
            None => name,
        };
        let img = store.resolve(name).ok()?;
        let raw = store.read_blob(&img.id).ok()?;
        let config = ImageConfig::from_json(&raw).ok()?;
        Some(
            config
                .config
                .env
                .unwrap_or_else(|| vec![DEFAULT_PATH.to_owned()]),
        )
    };
    let contexts =
        |name: &str| named_context::named_context(opts, name).map(|(_, c)| c.to_string());
    strata_frontend::render_plan(&df, &global, &stages, &graph, &inputs, &base_env, &contexts)
        .map_err(dockerfile)
}

/// Runs a build into `store` and the requested outputs: once per platform
/// of `opts.platforms` (the host when empty), each with its own TARGET*
/// ARGs, exported together (an OCI index for several platforms).
pub fn build(
    store: &Store,
    opts: &BuildOptions,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<BuildResult> {
    build_with_lease(store, None, opts, events)
}

/// [`build`] holding what it uses in `lease` (`strata bake` gives its
/// targets one lease); `None` takes a lease for this build once its checks
/// have passed. No build holds the store lock while it runs, only around
/// each commit, so builds in one process or several run side by side.
pub fn build_with_lease(
    store: &Store,
    lease: Option<&strata_store::Lease>,
    opts: &BuildOptions,
    events: &mut (dyn FnMut(Event) + Send),
) -> Result<BuildResult> {
    for dir in store.tree_parents() {
        strata_exec::snapshot::spread_subdirectories(&dir);
    }
    let host = strata_frontend::Platform::host();
    let platforms = if opts.platforms.is_empty() {
        vec![host.clone()]
    } else {
        opts.platforms.clone()
    };
    for (i, p) in platforms.iter().enumerate() {
        if p.os != "linux" {
            return Err(other(format!(
                "--platform {p}: only linux images can be built"
            )));
        }
        if platforms[..i].contains(p) {
            return Err(other(format!("--platform {p} is given twice")));
        }
    }
    export::check_outputs(&opts.outputs, platforms.len())?;
    // The checks run before anything is built, as in the reference's
    // frontend: their warnings go out as events, `error=true` stops here.
    let report = checks::run(
        store,
        opts,
        strata_frontend::lint::Scope::Build,
        &platforms[0],
    )?;
    for w in &report.warnings {
        events(Event::Warning(w.clone()));
    }
    if let Some(e) = report.error.filter(|e| e.from_checks) {
        return Err(other(e.message));
    }
    let (epoch, epoch_source) = build_epoch(&opts.context, &opts.build_args);
    // The provenance's dates: the epoch, unless the image itself is
    // stamped with the wall clock (`--timestamp now`).
    let started = if opts.timestamp_now {
        strata_store::now_unix()
    } else {
        epoch
    };
    let own_lease;
    let lease = match lease {
        Some(l) => l,
        None => {
            own_lease = store.lease("build")?;
            &own_lease
        }
    };
    // What killed builds and runs left in the store's scratch space goes
    // now; a live build's scratch (its owner lock held) stays. Moved aside
    // under the store lock, deleted outside it: a large stale tree does not
    // hold up other builds' commits.
    store.sweep_scratch_aside(&|p| {
        strata_exec::snapshot::remove_tree(p).map_err(|e| e.to_string())
    })?;
    let tags = opts
        .tags
        .iter()
        .map(|t| strata_store::normalize_reference(t))
        .collect::<Result<Vec<_>, _>>()?;
    // With several platforms the store's names (one image per name) go to
    // the host platform's image when it is built; the others are stored
    // unnamed and reach users through the outputs.
    let named = if platforms.len() == 1 {
        Some(&platforms[0])
    } else {
        platforms.iter().find(|p| **p == host)
    };
    let mut images = Vec::new();
    let mut result: Option<BuildResult> = None;
    let mut cache_keys: Vec<Vec<String>> = Vec::new();
    for (i, p) in platforms.iter().enumerate() {
        let inputs = BuildInputs {
            build_args: opts.build_args.clone(),
            build_platform: host.clone(),
            target_platform: p.clone(),
        };
        let is_named = named == Some(p);
        let store_tags: &[String] = if is_named { &tags } else { &[] };
        let label = if platforms.len() > 1 {
            format!("{p} ")
        } else {
            String::new()
        };
        let first_step = result
            .as_ref()
            .map_or(0, |r: &BuildResult| r.steps_numbered);
        let (image, stats) = build_platform(
            store,
            lease,
            opts,
            PlatformBuild {
                inputs,
                tags: store_tags,
                label,
                first_step,
                earlier_cache_keys: &cache_keys,
                last: i + 1 == platforms.len(),
            },
            epoch,
            events,
        )?;
        let r = result.get_or_insert(BuildResult {
            image_id: image.id,
            manifest_digest: image.manifest,
            size: image.size(),
            layers_built: 0,
            steps_cached: 0,
            steps_run: 0,
            epoch,
            epoch_source,
            context_files_hashed: 0,
            platforms: Vec::new(),
            steps_numbered: 0,
            provenance: Vec::new(),
            sbom: Vec::new(),
            exported_index: None,
        });
        r.steps_numbered = stats.steps_numbered;
        cache_keys = stats.cache_keys;
        if is_named {
            r.image_id = image.id;
            r.manifest_digest = image.manifest;
            r.size = image.size();
        }
        r.layers_built += stats.built;
        r.steps_cached += stats.cached;
        r.steps_run += stats.run;
        r.context_files_hashed += stats.hashed;
        r.platforms.push((p.to_string(), image.id, image.manifest));
        if let Some(request) = &opts.attestations.provenance {
            let finished = if opts.timestamp_now {
                strata_store::now_unix()
            } else {
                epoch
            };
            let make = |request: &provenance::ProvenanceRequest| {
                provenance::predicate(&provenance::ProvenanceInputs {
                    request,
                    opts,
                    materials: &stats.materials,
                    image: image.id,
                    started,
                    finished,
                })
            };
            let predicate = make(request)?;
            let predicate_v02 = match request.version {
                provenance::SlsaVersion::V02 => predicate.clone(),
                provenance::SlsaVersion::V1 => make(&provenance::ProvenanceRequest {
                    version: provenance::SlsaVersion::V02,
                    ..request.clone()
                })?,
            };
            r.provenance.push(PlatformProvenance {
                platform: p.clone(),
                image: image.id,
                request: request.clone(),
                predicate,
                predicate_v02,
            });
        }
        if opts.attestations.sbom.is_some() {
            let scanning = std::time::Instant::now();
            let sbom = sbom::platform_sbom(store, &image, &stats.stages, p, started)?;
            r.steps_numbered += 1;
            events(Event::Internal {
                n: r.steps_numbered,
                work: InternalWork::GeneratingSbom {
                    documents: sbom.documents.len(),
                },
                seconds: scanning.elapsed().as_secs_f64(),
            });
            r.sbom.push(sbom);
        }
        images.push(export::PlatformImage {
            image,
            platform: p.clone(),
        });
    }
    let mut result = result.ok_or_else(|| other("no platform was built"))?;
    let provenance = result.provenance.clone();
    let sboms = result.sbom.clone();
    for out in &opts.outputs {
        let started = std::time::Instant::now();
        let attach = export::Attach {
            provenance: &provenance,
            sbom: &sboms,
            names: &opts.tags,
        };
        let mut compressing = 0.0;
        let written_index = export::export(
            store,
            lease,
            &images,
            out,
            &attach,
            epoch,
            &mut |layers, seconds| {
                // Layers are compressed when first shipped: that time is
                // its own line, before the export's.
                compressing = seconds;
                result.steps_numbered += 1;
                events(Event::Internal {
                    n: result.steps_numbered,
                    work: InternalWork::Compressing { layers },
                    seconds,
                });
            },
        )?;
        if written_index.is_some() {
            result.exported_index = written_index;
        }
        // Its own progress line, numbered after the steps.
        result.steps_numbered += 1;
        events(Event::Internal {
            n: result.steps_numbered,
            work: InternalWork::Exporting {
                output: export::describe(out),
            },
            seconds: (started.elapsed().as_secs_f64() - compressing).max(0.0),
        });
    }
    // The digest of each image's manifest as shipped once its layers have
    // been compressed for shipping (by an output here, or an earlier
    // export, `save` or `push`): what `push`, `save` and `images --digests`
    // show. Until then, the manifest of the image as stored (layers
    // uncompressed); nothing is compressed just to name it.
    for (i, pi) in images.iter().enumerate() {
        if let Some(shipped) = store.shipped(&pi.image)? {
            if pi.image.id == result.image_id {
                result.manifest_digest = shipped.manifest;
            }
            if let Some(p) = result.platforms.get_mut(i) {
                p.2 = shipped.manifest;
            }
        }
    }
    Ok(result)
}
