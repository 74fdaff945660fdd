//! What image outputs and pushes share: the attestations attached to each
//! image, and the OCI index that holds the images with them.

use strata_oci::attestation::{
    IndexDocument, IndexImage, StatementBlob, image_subjects, statement,
};
use strata_oci::image::{Manifest, Platform};
use strata_store::ImageRecord;

use crate::annotations::{AnnotationTarget, Annotations};
use crate::api::PlatformProvenance;

/// One platform's image of a build, as the exporters receive it.
#[derive(Debug, Clone)]
pub(crate) struct PlatformImage {
    pub image: ImageRecord,
    pub platform: Platform,
}

/// What an image output carries beside the images.
pub(crate) struct Attach<'a> {
    /// Each platform's provenance (empty: none asked for).
    pub(crate) provenance: &'a [PlatformProvenance],
    /// Each platform's SBOMs (empty: none asked for).
    pub(crate) sbom: &'a [crate::api::PlatformSbom],
    /// The image's names (`-t`): in the layout's `index.json`, and the
    /// statements' subjects.
    pub(crate) names: &'a [String],
}

/// The statements to attach to `manifest` (platform `platform`): its
/// SBOMs, then its provenance unless that is `inline-only` and `inline`
/// is false (BuildKit's order: the frontend's attestations, then the
/// solver's provenance).
pub(crate) fn statements_for(
    attach: &Attach<'_>,
    platform: &Platform,
    manifest_json: &[u8],
    inline: bool,
) -> Vec<StatementBlob> {
    let digest = strata_oci::Digest::of(manifest_json);
    let subjects = image_subjects(attach.names, platform, &digest);
    let mut out = crate::sbom::statements(attach.sbom, platform, &subjects);
    out.extend(
        attach
            .provenance
            .iter()
            .filter(|p| p.platform == *platform && (inline || !p.request.inline_only))
            .map(|p| {
                let predicate_type = p.request.predicate_type();
                StatementBlob {
                    predicate_type: predicate_type.to_owned(),
                    json: statement(predicate_type, &subjects, &p.predicate),
                }
            }),
    );
    out
}

/// The index of `manifests` (each with its platform, annotations already
/// on the manifests) with `annotations`' descriptor and index ones, and an
/// attestation manifest per image with statements.
pub(crate) fn index_document(
    manifests: Vec<(Manifest, Vec<u8>, Platform)>,
    statements: impl Fn(&Platform, &[u8]) -> Vec<StatementBlob>,
    annotations: &Annotations,
) -> IndexDocument {
    let images: Vec<IndexImage> = manifests
        .into_iter()
        .map(|(manifest, json, platform)| IndexImage {
            statements: statements(&platform, &json),
            json,
            descriptor_annotations: annotations.of(AnnotationTarget::ManifestDescriptor, &platform),
            manifest,
            platform,
        })
        .collect();
    IndexDocument::new(
        &images,
        annotations.of_index(AnnotationTarget::Index),
        annotations.of_index(AnnotationTarget::IndexDescriptor),
    )
}

/// BuildKit's refusal of index annotations on an image that is no index.
pub(crate) const INDEX_ANNOTATIONS_SINGLE: &str =
    "index annotations not supported for single platform export";
