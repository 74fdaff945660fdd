//! The build checks for one build invocation: the frontend's lint rules
//! (`strata_frontend::lint`) given what only this side knows, the base
//! images in the store (their ENV and platform) and the context's
//! `.dockerignore`. `--check` reports them; a build sends them as
//! [`crate::Event::Warning`]s and fails on `error=true`.

use strata_frontend::lint::{self, LintOptions, LintReport, Scope};
use strata_frontend::{BuildInputs, Platform};
use strata_oci::image::ImageConfig;
use strata_store::Store;

use crate::api::BuildOptions;
use crate::context;
use crate::error::Result;

/// `strata build --check`: every stage (or those `--target` needs), for
/// the first `--platform` (the host's by default).
pub fn check(store: &Store, opts: &BuildOptions) -> Result<LintReport> {
    let target = opts
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(Platform::host);
    run(store, opts, Scope::Check, &target)
}

pub(crate) fn run(
    store: &Store,
    opts: &BuildOptions,
    scope: Scope,
    target_platform: &Platform,
) -> Result<LintReport> {
    let ignore = context::Ignore::load(&opts.context, &opts.dockerfile_name)?;
    let inputs = BuildInputs {
        build_args: opts.build_args.clone(),
        build_platform: Platform::host(),
        target_platform: target_platform.clone(),
    };
    let config = |name: &str| -> Option<ImageConfig> {
        let img = store.resolve(name).ok()?;
        let raw = store.read_blob(&img.id).ok()?;
        ImageConfig::from_json(&raw).ok()
    };
    let base_env = |name: &str| config(name).map(|c| c.config.env.unwrap_or_default());
    let base_platform = |name: &str| {
        config(name).and_then(|c| {
            format!("{}/{}", c.platform.os, c.platform.architecture)
                .parse()
                .ok()
        })
    };
    Ok(lint::lint(
        &opts.dockerfile,
        &opts.dockerfile_name,
        &LintOptions {
            inputs: &inputs,
            target: opts.target.as_deref(),
            scope,
            base_env: &base_env,
            base_platform: &base_platform,
            ignore: Some(ignore.rules()),
        },
    ))
}
