//! SLSA provenance of a build, as BuildKit 0.25 writes it
//! (`solver/llbsolver/provenance/predicate.go` makes the v0.2 predicate,
//! `solver/llbsolver/provenance.go` trims it for `mode=min`, and
//! `provenance/types/types.go` converts it to v1 and fixes the JSON field
//! order these structs copy).
//!
//! What strata cannot give is left out rather than invented: there is no
//! LLB, so no `buildConfig.llbDefinition`, no source-map `locations` and no
//! per-step `layers`; `max` mode records the Dockerfile itself (the
//! `source.infos` entry BuildKit also writes). The dates are the build
//! epoch and the invocation ID is derived from the images, so a rebuild
//! writes the same provenance (BuildKit uses the wall clock and a random ID;
//! see docs/decisions.md).

use std::collections::BTreeMap;

use base64::Engine;
use serde::Serialize;
use strata_oci::Digest;
use strata_oci::attestation::docker_purl;

use crate::error::{Result, other};

const BUILD_TYPE_02: &str = "https://mobyproject.org/buildkit@v1";
const BUILD_TYPE_1: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";

pub use crate::api::{
    ContextSource, PREDICATE_SLSA1, PREDICATE_SLSA02, ProvenanceMode, ProvenanceRequest,
    SlsaVersion,
};

/// A base image a platform's build used (FROM, `COPY --from`,
/// `RUN --mount=from=`): the name as written, the platform it was
/// resolved for, and the digest it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageMaterial {
    pub(crate) name: String,
    pub(crate) platform: strata_oci::Platform,
    pub(crate) digest: Digest,
}

/// What a predicate is made of, per platform.
pub(crate) struct ProvenanceInputs<'a> {
    pub(crate) request: &'a ProvenanceRequest,
    pub(crate) opts: &'a crate::api::BuildOptions,
    pub(crate) materials: &'a [ImageMaterial],
    /// The image built (its config digest), for the invocation ID.
    pub(crate) image: Digest,
    /// Start and end of the build, seconds since the epoch.
    pub(crate) started: i64,
    pub(crate) finished: i64,
}

// The v0.2 predicate, fields in the order Go's encoder writes
// `ProvenancePredicateSLSA02` (embedded fields first, shadowed ones where
// the outer struct declares them).
#[derive(Serialize)]
struct Material {
    #[serde(skip_serializing_if = "String::is_empty")]
    uri: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digest: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Builder {
    id: String,
}

#[derive(Serialize, Default)]
struct ConfigSource02 {
    #[serde(skip_serializing_if = "String::is_empty")]
    uri: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digest: BTreeMap<String, String>,
    #[serde(rename = "entryPoint", skip_serializing_if = "String::is_empty")]
    entry_point: String,
}

#[derive(Serialize)]
struct Local {
    name: &'static str,
}

#[derive(Serialize)]
struct Parameters {
    #[serde(skip_serializing_if = "String::is_empty")]
    frontend: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    locals: Vec<Local>,
}

#[derive(Serialize)]
struct Environment {
    platform: String,
}

#[derive(Serialize)]
struct Invocation {
    #[serde(rename = "configSource")]
    config_source: ConfigSource02,
    parameters: Parameters,
    environment: Environment,
}

#[derive(Serialize)]
struct SourceInfo {
    filename: String,
    language: &'static str,
    data: String,
}

#[derive(Serialize)]
struct Source {
    infos: Vec<SourceInfo>,
}

#[derive(Serialize, Default)]
struct BuildKitMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source>,
}

#[derive(Serialize)]
struct Completeness02 {
    parameters: bool,
    environment: bool,
    materials: bool,
}

#[derive(Serialize)]
struct Metadata02 {
    #[serde(rename = "buildInvocationID")]
    invocation_id: String,
    #[serde(rename = "buildStartedOn")]
    started_on: String,
    #[serde(rename = "buildFinishedOn")]
    finished_on: String,
    completeness: Completeness02,
    reproducible: bool,
    #[serde(rename = "https://mobyproject.org/buildkit@v1#metadata")]
    buildkit: BuildKitMetadata,
}

#[derive(Serialize)]
struct Predicate02 {
    builder: Builder,
    #[serde(rename = "buildType")]
    build_type: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    materials: Vec<Material>,
    invocation: Invocation,
    metadata: Metadata02,
}

// The v1 predicate (`ProvenancePredicateSLSA1`), likewise.
#[derive(Serialize)]
struct ConfigSource1 {
    #[serde(skip_serializing_if = "String::is_empty")]
    uri: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    digest: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    path: String,
}

#[derive(Serialize)]
struct External {
    #[serde(rename = "configSource")]
    config_source: ConfigSource1,
    request: Parameters,
}

/// Go writes this through a map, so its keys come sorted.
#[derive(Serialize)]
struct Internal {
    #[serde(rename = "builderPlatform")]
    builder_platform: String,
}

#[derive(Serialize)]
struct BuildDefinition {
    #[serde(rename = "buildType")]
    build_type: &'static str,
    #[serde(rename = "resolvedDependencies", skip_serializing_if = "Vec::is_empty")]
    resolved_dependencies: Vec<Material>,
    #[serde(rename = "externalParameters")]
    external: External,
    #[serde(rename = "internalParameters")]
    internal: Internal,
}

#[derive(Serialize)]
struct Completeness1 {
    request: bool,
    #[serde(rename = "resolvedDependencies")]
    resolved_dependencies: bool,
}

#[derive(Serialize)]
struct Metadata1 {
    #[serde(rename = "invocationID")]
    invocation_id: String,
    #[serde(rename = "startedOn")]
    started_on: String,
    #[serde(rename = "finishedOn")]
    finished_on: String,
    buildkit_metadata: BuildKitMetadata,
    buildkit_completeness: Completeness1,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    buildkit_reproducible: bool,
}

#[derive(Serialize)]
struct RunDetails {
    builder: Builder,
    metadata: Metadata1,
}

#[derive(Serialize)]
struct Predicate1 {
    #[serde(rename = "buildDefinition")]
    build_definition: BuildDefinition,
    #[serde(rename = "runDetails")]
    run_details: RunDetails,
}

/// The predicate's JSON for one platform's image.
pub(crate) fn predicate(inputs: &ProvenanceInputs<'_>) -> Result<Vec<u8>> {
    let req = inputs.request;
    let opts = inputs.opts;
    let mut materials = Vec::new();
    // Stages run in parallel, so the order images were first used in is
    // not stable: sorted, each once.
    let mut unique: Vec<&ImageMaterial> = inputs.materials.iter().collect();
    unique.sort_by_key(|m| (m.name.clone(), m.platform.to_string(), m.digest));
    unique.dedup();
    for m in unique {
        let uri = match strata_oci::reference::Reference::parse(&m.name) {
            Ok(r) => docker_purl(&r, Some(&m.platform)),
            // Not a reference (an image ID given by a named context): the
            // digest alone says what it was.
            Err(_) => String::new(),
        };
        materials.push(Material {
            uri,
            digest: BTreeMap::from([("sha256".to_owned(), m.digest.hex())]),
        });
    }
    // The frontend arguments buildx sends that the predicate keeps (the
    // host-specific ones, `platform` among them, BuildKit filters out).
    let mut args = BTreeMap::new();
    let mut complete_parameters = true;
    if let Some(t) = &opts.target {
        args.insert("target".to_owned(), t.clone());
    }
    if opts.no_cache {
        args.insert("no-cache".to_owned(), String::new());
    }
    let user_args = opts
        .build_args
        .iter()
        .map(|(k, v)| (format!("build-arg:{k}"), v))
        .chain(opts.labels.iter().map(|(k, v)| (format!("label:{k}"), v)));
    for (k, v) in user_args {
        match req.mode {
            ProvenanceMode::Max => {
                args.insert(k, v.clone());
            }
            // `mode=min` drops them and says the parameters are incomplete.
            ProvenanceMode::Min => complete_parameters = false,
        }
    }
    let mut config_source = ConfigSource02 {
        entry_point: std::path::Path::new(&opts.dockerfile_name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".to_owned()),
        ..ConfigSource02::default()
    };
    let locals = match &req_context(opts) {
        ContextSource::Local => vec![Local { name: "context" }, Local { name: "dockerfile" }],
        ContextSource::Url(u) => {
            config_source.uri = redact_credentials(u);
            Vec::new()
        }
    };
    let buildkit = match req.mode {
        ProvenanceMode::Min => BuildKitMetadata::default(),
        ProvenanceMode::Max => BuildKitMetadata {
            source: Some(Source {
                infos: vec![SourceInfo {
                    filename: config_source.entry_point.clone(),
                    language: "Dockerfile",
                    data: base64::engine::general_purpose::STANDARD.encode(&opts.dockerfile),
                }],
            }),
        },
    };
    let started = strata_oci::image::rfc3339(inputs.started)
        .map_err(|e| other(format!("provenance: {e}")))?;
    let finished = strata_oci::image::rfc3339(inputs.finished)
        .map_err(|e| other(format!("provenance: {e}")))?;
    let invocation_id = invocation_id(&inputs.image, inputs.started);
    let parameters = Parameters {
        frontend: "dockerfile.v0".into(),
        args,
        locals,
    };
    let builder_platform = strata_oci::Platform::host().normalized().to_string();
    // A local context is a source BuildKit cannot pin, so the materials are
    // never complete (and the build never hermetic) here.
    let complete_materials = false;
    let json = match req.version {
        SlsaVersion::V02 => serde_json::to_vec(&Predicate02 {
            builder: Builder {
                id: req.builder_id.clone(),
            },
            build_type: BUILD_TYPE_02,
            materials,
            invocation: Invocation {
                config_source,
                parameters,
                environment: Environment {
                    platform: builder_platform,
                },
            },
            metadata: Metadata02 {
                invocation_id,
                started_on: started,
                finished_on: finished,
                completeness: Completeness02 {
                    parameters: complete_parameters,
                    environment: true,
                    materials: complete_materials,
                },
                reproducible: req.reproducible,
                buildkit,
            },
        }),
        SlsaVersion::V1 => serde_json::to_vec(&Predicate1 {
            build_definition: BuildDefinition {
                build_type: BUILD_TYPE_1,
                resolved_dependencies: materials,
                external: External {
                    config_source: ConfigSource1 {
                        uri: config_source.uri,
                        digest: config_source.digest,
                        path: config_source.entry_point,
                    },
                    request: parameters,
                },
                internal: Internal { builder_platform },
            },
            run_details: RunDetails {
                builder: Builder {
                    id: req.builder_id.clone(),
                },
                metadata: Metadata1 {
                    invocation_id,
                    started_on: started,
                    finished_on: finished,
                    buildkit_metadata: buildkit,
                    buildkit_completeness: Completeness1 {
                        request: complete_parameters,
                        resolved_dependencies: complete_materials,
                    },
                    buildkit_reproducible: req.reproducible,
                },
            },
        }),
    };
    json.map_err(|e| other(format!("provenance: {e}")))
}

fn req_context(opts: &crate::api::BuildOptions) -> ContextSource {
    opts.attestations.context_source.clone()
}

/// An ID for the build in BuildKit's form (25 base-36 characters), derived
/// from the image and the build's start, so a rebuild gets the same one.
fn invocation_id(image: &Digest, started: i64) -> String {
    let seed = Digest::of(format!("{image} {started}").as_bytes());
    const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    seed.as_bytes()
        .iter()
        .take(25)
        .map(|b| ALPHABET[usize::from(*b) % 36] as char)
        .collect()
}

/// A URL without its user information (BuildKit's
/// `urlutil.RedactCredentials`).
fn redact_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://xxxxx@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(s: &str) -> Vec<(String, String)> {
        s.split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn requests_parse_with_buildkits_defaults() {
        let r = ProvenanceRequest::from_attrs(&[]).unwrap();
        assert_eq!(r.mode, ProvenanceMode::Max);
        assert_eq!(r.version, SlsaVersion::V02);
        assert!(!r.inline_only);
        let r = ProvenanceRequest::from_attrs(&attrs("mode=min,version=v1,builder-id=me")).unwrap();
        assert_eq!(
            (r.mode, r.version, r.builder_id.as_str()),
            (ProvenanceMode::Min, SlsaVersion::V1, "me")
        );
        assert_eq!(r.predicate_type(), PREDICATE_SLSA1);
        assert!(ProvenanceRequest::from_attrs(&attrs("mode=mid")).is_err());
        assert!(ProvenanceRequest::from_attrs(&attrs("version=v2")).is_err());
        assert!(ProvenanceRequest::from_attrs(&attrs("bogus=1")).is_err());
        let d = ProvenanceRequest::buildx_default();
        assert!(d.inline_only && d.mode == ProvenanceMode::Min);
    }

    #[test]
    fn credentials_are_redacted_and_ids_are_stable() {
        assert_eq!(
            redact_credentials("https://user:pw@github.com/a/b.git#main"),
            "https://xxxxx@github.com/a/b.git#main"
        );
        assert_eq!(
            redact_credentials("https://github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        let d = Digest::of(b"x");
        assert_eq!(invocation_id(&d, 1), invocation_id(&d, 1));
        assert_ne!(invocation_id(&d, 1), invocation_id(&d, 2));
        assert_eq!(invocation_id(&d, 1).len(), 25);
    }
}
