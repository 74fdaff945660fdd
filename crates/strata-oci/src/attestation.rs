//! Attestations as BuildKit stores them beside an image (its
//! `docs/attestations/attestation-storage.md`): in-toto statements, each a
//! layer (`application/vnd.in-toto+json`, annotated with its predicate type)
//! of an *attestation manifest*, which the image index lists after the image
//! manifests with platform `unknown/unknown` and the annotations
//! `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest=<the image manifest it describes>`.
//!
//! Shapes follow moby/buildkit v0.25: `exporter/attestation/make.go`
//! (statements), `exporter/containerimage/writer.go`
//! (`commitAttestationsManifest`, `attestationsConfig`) and `util/purl`
//! (subject and material names). Only the JSON layout differs: ours is
//! compact, as every manifest strata writes is (see [`crate::image`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::Digest;
use crate::image::{
    Descriptor, ImageConfig, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST,
    Manifest, canonical_json,
};
use crate::platform::Platform;
use crate::reference::{Reference, familiar};

/// The media type of an in-toto statement layer.
pub const MEDIA_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";
/// The annotation naming a statement layer's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// The annotation marking an index entry as an attestation manifest.
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// The annotation naming the image manifest an attestation manifest describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The value of [`ANNOTATION_REFERENCE_TYPE`] for attestation manifests.
pub const REFERENCE_TYPE_ATTESTATION: &str = "attestation-manifest";
/// in-toto's statement type, as BuildKit 0.25 writes it.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";

/// The platform attestation manifests are listed with in an index.
pub fn attestation_platform() -> Platform {
    Platform::new("unknown", "unknown", None)
}

/// One subject of a statement: what it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject naming a blob by its sha256 digest.
    pub fn new(name: impl Into<String>, digest: &Digest) -> Self {
        Subject {
            name: name.into(),
            digest: BTreeMap::from([("sha256".to_owned(), digest.hex())]),
        }
    }
}

/// The subjects BuildKit gives an image's statements: one per image name,
/// `pkg:docker/NAME@TAG?platform=OS%2FARCH`, each with the image manifest's
/// digest (none when the image has no name).
pub fn image_subjects(names: &[String], platform: &Platform, manifest: &Digest) -> Vec<Subject> {
    names
        .iter()
        .filter_map(|n| Reference::parse(n).ok())
        .map(|r| Subject::new(docker_purl(&r, Some(platform)), manifest))
        .collect()
}

#[derive(Serialize)]
struct StatementHeader<'a> {
    #[serde(rename = "_type")]
    kind: &'static str,
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    subject: &'a [Subject],
}

/// An in-toto statement (compact JSON) around `predicate`, a JSON document
/// put in as it is (its field order is the predicate's own), as BuildKit's
/// `MakeInTotoStatements` marshals it.
pub fn statement(predicate_type: &str, subjects: &[Subject], predicate: &[u8]) -> Vec<u8> {
    let mut out = canonical_json(&StatementHeader {
        kind: STATEMENT_TYPE,
        predicate_type,
        subject: subjects,
    });
    // Replace the closing brace with the predicate field.
    out.pop();
    out.extend_from_slice(b",\"predicate\":");
    out.extend_from_slice(predicate);
    out.push(b'}');
    out
}

/// Compact JSON laid out as Go's `json.MarshalIndent(v, "", "  ")` does
/// (how BuildKit writes a statement into a `local`/`tar` output): one
/// member per line, two spaces per level, `": "` after keys, empty objects
/// and arrays kept as `{}`/`[]`.
pub fn indent_json(compact: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(compact.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', depth * 2));
    };
    let mut i = 0;
    while i < compact.len() {
        let c = compact[i];
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' => {
                in_string = true;
                out.push(c);
            }
            b'{' | b'[' => {
                let close = if c == b'{' { b'}' } else { b']' };
                if compact.get(i + 1) == Some(&close) {
                    out.extend([c, close]);
                    i += 2;
                    continue;
                }
                out.push(c);
                depth += 1;
                newline(&mut out, depth);
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend(b": "),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

/// A package URL for an image reference, as BuildKit's `purl.RefToPURL`
/// with type `docker` writes it: the familiar name split into namespace and
/// name (each query-escaped), the tag as version, then the `digest` and
/// `platform` qualifiers (path-escaped).
pub fn docker_purl(reference: &Reference, platform: Option<&Platform>) -> String {
    let name = familiar(&reference.name());
    let mut parts: Vec<&str> = name.split('/').collect();
    let last = parts.pop().unwrap_or_default();
    let mut out = String::from("pkg:docker/");
    for ns in parts {
        out.push_str(&query_escape(ns));
        out.push('/');
    }
    out.push_str(&query_escape(last));
    if let Some(tag) = &reference.tag {
        out.push('@');
        out.push_str(&path_escape(tag));
    }
    let mut qualifiers = Vec::new();
    if let Some(d) = &reference.digest {
        qualifiers.push(format!("digest={}", path_escape(&d.to_string())));
    }
    if let Some(p) = platform {
        qualifiers.push(format!(
            "platform={}",
            path_escape(&p.normalized().to_string())
        ));
    }
    if !qualifiers.is_empty() {
        out.push('?');
        out.push_str(&qualifiers.join("&"));
    }
    out
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if unreserved(b) => out.push(b as char),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's `url.PathEscape` (a path segment: `/`, `;`, `,` and `?` escaped,
/// `$&+:=@` kept); also what package URLs escape their parts with.
pub fn path_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if unreserved(b) || matches!(b, b'$' | b'&' | b'+' | b':' | b'=' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One statement to store: its predicate type and its JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementBlob {
    pub predicate_type: String,
    pub json: Vec<u8>,
}

/// An attestation manifest and every blob it needs, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationManifest {
    pub manifest: Manifest,
    /// The manifest's JSON, as stored and pushed.
    pub json: Vec<u8>,
    /// The config and the statement layers, by digest.
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    /// The digest of the image manifest it describes.
    pub subject: Digest,
}

impl AttestationManifest {
    /// The attestation manifest for the image manifest `subject`: one layer
    /// per statement and an image config for platform `unknown/unknown`
    /// whose diff_ids are the statements' digests (BuildKit's
    /// `attestationsConfig`).
    pub fn new(subject: Digest, statements: &[StatementBlob]) -> Self {
        let mut layers = Vec::new();
        let mut blobs = Vec::new();
        let mut config = ImageConfig::new("unknown", "unknown");
        for s in statements {
            let digest = Digest::of(&s.json);
            let mut d = Descriptor::new(MEDIA_TYPE_IN_TOTO, digest, s.json.len() as u64);
            d.annotations
                .insert(ANNOTATION_PREDICATE_TYPE.into(), s.predicate_type.clone());
            config.rootfs.diff_ids.push(digest);
            blobs.push((d.clone(), s.json.clone()));
            layers.push(d);
        }
        let config_json = config.to_json();
        let config_desc = Descriptor::new(
            MEDIA_TYPE_OCI_CONFIG,
            Digest::of(&config_json),
            config_json.len() as u64,
        );
        blobs.insert(0, (config_desc.clone(), config_json));
        let manifest = Manifest::oci(config_desc, layers);
        let json = manifest.to_json();
        AttestationManifest {
            manifest,
            json,
            blobs,
            subject,
        }
    }

    /// Its entry in an image index: platform `unknown/unknown`, annotated
    /// as an attestation of [`AttestationManifest::subject`].
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            MEDIA_TYPE_OCI_MANIFEST,
            Digest::of(&self.json),
            self.json.len() as u64,
        );
        d.annotations.insert(
            ANNOTATION_REFERENCE_TYPE.into(),
            REFERENCE_TYPE_ATTESTATION.into(),
        );
        d.annotations
            .insert(ANNOTATION_REFERENCE_DIGEST.into(), self.subject.to_string());
        d.platform = Some(attestation_platform());
        d
    }
}

/// An image index with every document it needs that is not a stored image
/// blob: the image manifests (as shipped), the attestation manifests and
/// their blobs, all in memory, and the index itself. The images' configs
/// and layers are named by [`IndexDocument::store_blobs`]: the writer reads
/// those from its blob store. Both the OCI layout writer and a registry
/// push take this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexDocument {
    pub index: crate::image::Index,
    /// The index's JSON, as written and pushed.
    pub json: Vec<u8>,
    /// Every manifest the index lists, with its JSON.
    pub manifests: Vec<(Descriptor, Vec<u8>)>,
    /// Small blobs in memory (attestation configs and statements).
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    /// Configs and layers of the images, which the blob store has.
    pub store_blobs: Vec<Descriptor>,
    /// Annotations of the index's own descriptor (`index-descriptor:`),
    /// where a layout lists it (`index.json`).
    pub descriptor_annotations: BTreeMap<String, String>,
}

/// One image of an [`IndexDocument`]: its manifest as shipped, its
/// platform and the annotations of its descriptor in the index.
#[derive(Debug, Clone)]
pub struct IndexImage {
    pub manifest: Manifest,
    /// The manifest's bytes as pushed or written: its own JSON, or the
    /// bytes a store holds it as (their digest is the one it is known by).
    pub json: Vec<u8>,
    pub platform: Platform,
    pub descriptor_annotations: BTreeMap<String, String>,
    /// Statements about this image, stored in its attestation manifest
    /// (none: no attestation manifest).
    pub statements: Vec<StatementBlob>,
}

impl IndexDocument {
    /// The index listing `images` (in order, each with its platform), then
    /// one attestation manifest per image that has statements, as
    /// BuildKit orders them; `annotations` go on the index itself.
    pub fn new(
        images: &[IndexImage],
        annotations: BTreeMap<String, String>,
        descriptor_annotations: BTreeMap<String, String>,
    ) -> Self {
        let mut entries = Vec::new();
        let mut manifests = Vec::new();
        let mut store_blobs = Vec::new();
        let mut blobs = Vec::new();
        let mut attestations = Vec::new();
        for img in images {
            let json = img.json.clone();
            let mt = if img.manifest.media_type.is_empty() {
                MEDIA_TYPE_OCI_MANIFEST.to_owned()
            } else {
                img.manifest.media_type.clone()
            };
            let mut d = Descriptor::new(mt, Digest::of(&json), json.len() as u64);
            d.annotations = img.descriptor_annotations.clone();
            d.platform = Some(img.platform.clone());
            store_blobs.push(img.manifest.config.clone());
            store_blobs.extend(img.manifest.layers.iter().cloned());
            if !img.statements.is_empty() {
                attestations.push(AttestationManifest::new(d.digest, &img.statements));
            }
            manifests.push((d.clone(), json));
            entries.push(d);
        }
        for a in attestations {
            let d = a.descriptor();
            blobs.extend(a.blobs.iter().cloned());
            manifests.push((d.clone(), a.json.clone()));
            entries.push(d);
        }
        let mut index = crate::image::Index::new(entries);
        index.annotations = annotations;
        let json = index.to_json();
        IndexDocument {
            index,
            json,
            manifests,
            blobs,
            store_blobs,
            descriptor_annotations,
        }
    }

    /// The index's descriptor (with its `index-descriptor:` annotations).
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            MEDIA_TYPE_OCI_INDEX,
            Digest::of(&self.json),
            self.json.len() as u64,
        );
        d.annotations = self.descriptor_annotations.clone();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indents_as_go() {
        let got = indent_json(br#"{"a":[1,{"b":"x,:{"}],"e":{},"f":[],"g":"q\"]"}"#);
        assert_eq!(
            String::from_utf8(got).unwrap(),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"x,:{\"\n    }\n  ],\n  \"e\": {},\n  \"f\": [],\n  \"g\": \"q\\\"]\"\n}"
        );
    }

    #[test]
    fn purls_are_buildkits() {
        let r = Reference::parse("alpine").unwrap();
        let p = Platform::new("linux", "amd64", None);
        assert_eq!(
            docker_purl(&r, Some(&p)),
            "pkg:docker/alpine@latest?platform=linux%2Famd64"
        );
        let r = Reference::parse("127.0.0.1:5000/org/app:v1.2").unwrap();
        let arm = Platform::new("linux", "arm", Some("v7"));
        assert_eq!(
            docker_purl(&r, Some(&arm)),
            "pkg:docker/127.0.0.1%3A5000/org/app@v1.2?platform=linux%2Farm%2Fv7"
        );
        let d = Digest::of(b"x");
        let pinned = Reference::parse(&format!("busybox:1@{d}")).unwrap();
        assert_eq!(
            docker_purl(&pinned, None),
            format!("pkg:docker/busybox@1?digest={d}")
        );
    }

    #[test]
    fn attestation_manifest_has_buildkits_shape() {
        let subject = Digest::of(b"image manifest");
        let s = StatementBlob {
            predicate_type: "https://slsa.dev/provenance/v0.2".into(),
            json: statement(
                "https://slsa.dev/provenance/v0.2",
                &[Subject::new("pkg:docker/a@1", &subject)],
                br#"{"k":1}"#,
            ),
        };
        assert_eq!(
            String::from_utf8(s.json.clone()).unwrap(),
            format!(
                r#"{{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2","subject":[{{"name":"pkg:docker/a@1","digest":{{"sha256":"{}"}}}}],"predicate":{{"k":1}}}}"#,
                subject.hex()
            )
        );
        let a = AttestationManifest::new(subject, std::slice::from_ref(&s));
        let (config_desc, config) = &a.blobs[0];
        assert_eq!(config_desc.digest, a.manifest.config.digest);
        assert_eq!(
            String::from_utf8(config.clone()).unwrap(),
            format!(
                r#"{{"architecture":"unknown","os":"unknown","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
                Digest::of(&s.json)
            )
        );
        let layer = &a.manifest.layers[0];
        assert_eq!(layer.media_type, MEDIA_TYPE_IN_TOTO);
        assert_eq!(
            layer.annotations[ANNOTATION_PREDICATE_TYPE],
            "https://slsa.dev/provenance/v0.2"
        );
        let d = a.descriptor();
        assert_eq!(d.platform, Some(attestation_platform()));
        assert_eq!(
            d.annotations[ANNOTATION_REFERENCE_DIGEST],
            subject.to_string()
        );
        assert_eq!(
            d.annotations[ANNOTATION_REFERENCE_TYPE],
            REFERENCE_TYPE_ATTESTATION
        );
        // oci-spec reads what we write.
        let _: oci_spec::image::ImageManifest = serde_json::from_slice(&a.json).unwrap();
    }
}
