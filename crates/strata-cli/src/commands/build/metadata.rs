//! `--metadata-file`: the JSON buildx writes after a build (the image's
//! digests and names, what was pushed, provenance and warnings when asked).

use std::path::Path;

use anyhow::Context;

/// What `--push` sent (each tag with the digest the registry serves), and
/// the build's top document: the index or manifest it pushed, or the
/// index an OCI output wrote.
pub(super) struct Pushed<'a> {
    pub(super) tags: &'a [(String, strata_oci::Digest)],
    pub(super) top: Option<&'a super::super::build_pushed::PushedTop>,
}

/// Writes the metadata of the build `result` to `p`, as buildx does.
pub(super) fn write_metadata_file(
    p: &Path,
    store: &strata_store::Store,
    result: &strata_build::BuildResult,
    tags: &[String],
    pushed: &Pushed<'_>,
    warnings: &[strata_frontend::lint::Warning],
    opts: &strata_build::BuildOptions,
) -> anyhow::Result<()> {
    // The manifest as shipped, as before layers were kept uncompressed
    // (compressing them now if no output has).
    let manifest_digest = match store.get_image(&result.image_id)? {
        Some(img) => super::super::ship::shipped_digest(store, &img)?,
        None => result.manifest_digest,
    };
    let mut meta = serde_json::json!({
        "containerimage.digest": manifest_digest.to_string(),
        "containerimage.config.digest": result.image_id.to_string(),
        "image.name": tags.join(","),
    });
    if let Some((_, d)) = pushed.tags.first() {
        // What buildx records after a push: the digest the registry serves.
        meta["containerimage.digest"] = serde_json::json!(d.to_string());
        meta["pushed"] = serde_json::json!(
            pushed
                .tags
                .iter()
                .map(|(t, d)| serde_json::json!({"name": t, "digest": d.to_string()}))
                .collect::<Vec<_>>()
        );
    }
    if let Some(top) = pushed.top {
        super::super::build_pushed::record(&mut meta, top, result.platforms.len());
    }
    // buildx records the provenance (as SLSA v0.2; without its
    // `metadata` unless BUILDX_METADATA_PROVENANCE=max), per platform
    // when there are several.
    let provenance_mode = std::env::var("BUILDX_METADATA_PROVENANCE").unwrap_or_default();
    let record_provenance = !matches!(
        provenance_mode.as_str(),
        "disabled" | "0" | "f" | "F" | "false" | "FALSE" | "False"
    );
    if record_provenance {
        for p in &result.provenance {
            let mut pred: serde_json::Value = serde_json::from_slice(&p.predicate_v02)?;
            if provenance_mode != "max"
                && let Some(o) = pred.as_object_mut()
            {
                o.remove("metadata");
                o.remove("buildConfig");
            }
            let key = if result.provenance.len() > 1 {
                format!("buildx.build.provenance/{}", p.platform)
            } else {
                "buildx.build.provenance".to_owned()
            };
            meta[key] = pred;
        }
    }
    // buildx records warnings only when asked (BUILDX_METADATA_WARNINGS).
    let record_warnings = std::env::var("BUILDX_METADATA_WARNINGS")
        .is_ok_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "TRUE" | "True"));
    if record_warnings && !warnings.is_empty() {
        meta["buildx.build.warnings"] = warnings
            .iter()
            .map(|w| {
                crate::progress::vertex_warning(w, Some((&opts.dockerfile_name, &opts.dockerfile)))
            })
            .collect();
    }
    strata_oci::atomic_write_shared(p, serde_json::to_string_pretty(&meta)?.as_bytes())
        .with_context(|| format!("writing {}", p.display()))
}
