//! `build --push`: the document it sends when the stored image alone will
//! not do, and what it reports of it, or of the index an OCI output wrote,
//! as buildx does (`--iidfile`, the metadata file's `containerimage.*`
//! keys).

use strata_oci::Digest;

/// The build's top document: what a pushed tag now names (an index for
/// several platforms or attestations, or an image manifest), or the index
/// an OCI output wrote.
#[derive(Debug, Clone)]
pub(crate) struct PushedTop {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
}

/// What `--iidfile` holds: BuildKit's exporter reports the image's config
/// digest (`containerimage.config.digest`) only for a single-platform
/// image, and buildx writes it when reported, else the top document's
/// digest (`containerimage.digest`): for several platforms, the index's.
pub(crate) fn image_id(config: &Digest, platforms: usize, top: Option<&PushedTop>) -> String {
    match top {
        Some(t) if platforms > 1 => t.digest.to_string(),
        _ => config.to_string(),
    }
}

/// Sets the metadata file's `containerimage.digest` and
/// `containerimage.descriptor` to the pushed document (BuildKit's image
/// exporter returns its descriptor, which buildx decodes into the file),
/// and drops `containerimage.config.digest` for several platforms, which
/// have no one config.
pub(crate) fn record(meta: &mut serde_json::Value, top: &PushedTop, platforms: usize) {
    meta["containerimage.digest"] = serde_json::json!(top.digest.to_string());
    meta["containerimage.descriptor"] = serde_json::json!({
        "mediaType": top.media_type,
        "digest": top.digest.to_string(),
        "size": top.size,
    });
    if platforms > 1
        && let Some(o) = meta.as_object_mut()
    {
        o.remove("containerimage.config.digest");
    }
}

/// What `--push` sends when the stored image alone will not do (see
/// [`strata_build::registry_upload`]), with the lease holding the images'
/// shipped blobs until it is sent.
pub(crate) fn registry_upload(
    store: &strata_store::Store,
    result: &strata_build::BuildResult,
    tags: &[String],
    annotations: &strata_build::annotations::Annotations,
) -> anyhow::Result<Option<(strata_image::registry::Upload, strata_store::Lease)>> {
    let bare = result.provenance.is_empty() && result.sbom.is_empty();
    if bare && annotations.is_empty() && result.platforms.len() < 2 {
        return Ok(None);
    }
    let mut images = Vec::new();
    for (_, id, _) in &result.platforms {
        let img = store
            .get_image(id)?
            .ok_or_else(|| anyhow::anyhow!("image {id} is not in the store"))?;
        images.push((img, id.to_string()));
    }
    let lease = store.lease_images("push", images.iter().map(|(i, n)| (i, n.as_str())))?;
    super::ship::ship_all(store, &lease, images.iter().map(|(i, _)| i))?;
    Ok(strata_build::registry_upload(store, result, tags, annotations)?.map(|u| (u, lease)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_platforms_report_the_index() {
        let config = Digest::of(b"config");
        let top = PushedTop {
            media_type: strata_oci::image::MEDIA_TYPE_OCI_INDEX.to_owned(),
            digest: Digest::of(b"index"),
            size: 5,
        };
        assert_eq!(image_id(&config, 2, Some(&top)), top.digest.to_string());
        assert_eq!(image_id(&config, 1, Some(&top)), config.to_string());
        assert_eq!(image_id(&config, 2, None), config.to_string());
        let mut meta = serde_json::json!({
            "containerimage.digest": "x",
            "containerimage.config.digest": config.to_string(),
        });
        record(&mut meta, &top, 1);
        assert_eq!(meta["containerimage.config.digest"], config.to_string());
        record(&mut meta, &top, 2);
        assert_eq!(meta["containerimage.digest"], top.digest.to_string());
        assert_eq!(meta["containerimage.descriptor"]["size"], 5);
        assert!(meta.get("containerimage.config.digest").is_none());
    }
}
