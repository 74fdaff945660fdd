//! `--push` (`-o type=registry`): what is sent when the stored image alone
//! will not do.

use strata_oci::image::{Manifest, Platform};
use strata_store::Store;

use super::index::{Attach, INDEX_ANNOTATIONS_SINGLE, index_document, statements_for};
use crate::annotations::{AnnotationTarget, Annotations};
use crate::error::{Result, context, other};

/// What `--push` (`-o type=registry`) sends for `result`'s images when a
/// stored manifest alone will not do: an index with an attestation
/// manifest per image when there is provenance (pushed images always carry
/// it, `inline-only` or not, as BuildKit's image exporter forces), or
/// annotations, or several platforms. `None`: push the stored image as it
/// is. Each image must have been shipped (`Store::ship`) and be leased by
/// the caller.
pub fn registry_upload(
    store: &Store,
    result: &crate::api::BuildResult,
    names: &[String],
    annotations: &Annotations,
) -> Result<Option<strata_image::registry::Upload>> {
    let multi = result.platforms.len() > 1;
    let attested = !result.provenance.is_empty() || !result.sbom.is_empty();
    if !attested && annotations.is_empty() && !multi {
        return Ok(None);
    }
    let mut manifests = Vec::new();
    for (platform, id, _) in &result.platforms {
        let platform: Platform = platform
            .parse()
            .map_err(|e: strata_oci::platform::PlatformError| other(e.to_string()))?;
        let image = store
            .get_image(id)?
            .ok_or_else(|| other(format!("image {id} is no longer in the store")))?;
        let shipped = store.shipped(&image)?.ok_or_else(|| {
            other(format!(
                "image {id}: its layers are not compressed for shipping yet"
            ))
        })?;
        let raw = store.read_blob(&shipped.manifest)?;
        let mut manifest =
            Manifest::from_json(&raw).map_err(context(format!("manifest {}", shipped.manifest)))?;
        let added = annotations.of(AnnotationTarget::Manifest, &platform);
        // Pushed byte for byte as stored (so the registry serves the
        // digest `images --digests` shows), unless annotations change it.
        let json = if added.is_empty() {
            raw
        } else {
            manifest.annotations.extend(added);
            manifest.to_json()
        };
        manifests.push((manifest, json, platform));
    }
    let built: Vec<Platform> = manifests.iter().map(|(_, _, p)| p.clone()).collect();
    annotations.check_platforms(&built)?;
    let attach = Attach {
        provenance: &result.provenance,
        sbom: &result.sbom,
        names,
    };
    if !attested && !multi {
        // One manifest, annotated: pushed as it is, under the tag.
        if annotations.wants_index() {
            return Err(other(INDEX_ANNOTATIONS_SINGLE));
        }
        let Some((manifest, json, _)) = manifests.pop() else {
            return Err(other("no image to push"));
        };
        let mut store_blobs = vec![manifest.config.clone()];
        store_blobs.extend(manifest.layers.iter().cloned());
        return Ok(Some(strata_image::registry::Upload {
            store_blobs,
            blobs: Vec::new(),
            manifests: Vec::new(),
            top_media_type: if manifest.media_type.is_empty() {
                strata_oci::image::MEDIA_TYPE_OCI_MANIFEST.to_owned()
            } else {
                manifest.media_type.clone()
            },
            top: json,
        }));
    }
    let doc = index_document(
        manifests,
        |p, json| statements_for(&attach, p, json, true),
        annotations,
    );
    Ok(Some(strata_image::registry::Upload {
        store_blobs: doc.store_blobs,
        blobs: doc.blobs,
        manifests: doc.manifests,
        top_media_type: strata_oci::image::MEDIA_TYPE_OCI_INDEX.to_owned(),
        top: doc.json,
    }))
}
