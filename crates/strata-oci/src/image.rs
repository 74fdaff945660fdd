//! Image configs, manifests and indexes, as JSON blobs.
//!
//! The config is our own serde type rather than `oci_spec::image::ImageConfiguration`:
//! Docker's image config carries fields the OCI type lacks (`Healthcheck`,
//! `OnBuild`, `Shell`, `ArgsEscaped`) that `docker inspect` shows and later
//! builds on top of an image inherit, so they must round-trip. Field names
//! and casing mirror Docker's JSON (`.Config` of `docker image inspect`), and
//! unknown fields of a base image's config are kept (`extra`). Manifests and
//! indexes are our own types too so that one shape serves the OCI and Docker
//! schema2 media types with typed digests; tests check that `oci-spec` parses
//! what we write.
//!
//! Serialization is canonical: fixed field order, sorted maps, no whitespace,
//! empty fields omitted, so equal content always gives equal digests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
pub use crate::platform::{Platform, host_architecture};

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";
/// What containerd and `docker buildx` use for the full image name in an
/// OCI layout's index.json.
pub const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid {what} JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("timestamp {0} is out of range")]
    Time(i64),
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`), as
/// `created` fields want.
pub fn rfc3339(secs: i64) -> Result<String, ImageError> {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .map_err(|_| ImageError::Time(secs))
}

/// Empty JSON object, the value type of `ExposedPorts` and `Volumes` sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The image config blob (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// `architecture`, `variant`, `os`, `os.version`, in that order (the
    /// config's, which differs from a descriptor's).
    #[serde(flatten, with = "platform_in_config")]
    pub platform: Platform,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields of a base image's config we do not model, kept verbatim.
    /// After `platform`: a flattened map gets the keys no field before it
    /// took.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The platform's fields in an image config, written in the config's order
/// (Docker's and the OCI image spec's `Image` struct: architecture, variant,
/// os, os.version), which is hashed into the config digest; read as any
/// [`Platform`].
mod platform_in_config {
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serializer};

    use super::Platform;

    pub fn serialize<S: Serializer>(p: &Platform, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("architecture", &p.architecture)?;
        if let Some(v) = &p.variant {
            map.serialize_entry("variant", v)?;
        }
        map.serialize_entry("os", &p.os)?;
        if let Some(v) = &p.os_version {
            map.serialize_entry("os.version", v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Platform, D::Error> {
        Platform::deserialize(d)
    }
}

/// The runtime defaults (`.Config` in `docker image inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
// Every field is optional: missing ones read as their default (None).
#[serde(default)]
pub struct ContainerConfig {
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(rename = "ExposedPorts", skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(rename = "Env", skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Healthcheck", skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Docker writes this (true) when CMD/ENTRYPOINT were given in shell form
    /// on Windows; BuildKit writes it for shell-form commands on Linux too.
    #[serde(rename = "ArgsEscaped", skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(rename = "Volumes", skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(rename = "OnBuild", skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(rename = "Labels", skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(rename = "Shell", skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
}

/// `HEALTHCHECK`; durations in nanoseconds as Docker stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        Self {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One `history` entry per instruction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// True for config-only steps (ENV, CMD, ...), which add no layer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// A config for an empty image for this platform (`linux`/`amd64` etc.).
    pub fn new(os: &str, architecture: &str) -> Self {
        Self {
            platform: Platform::new(os, architecture, None),
            ..Self::default()
        }
    }

    /// The platform this process runs on, in OCI terms.
    pub fn host() -> Self {
        Self::new("linux", host_architecture())
    }

    pub fn to_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn from_json(data: &[u8]) -> Result<Self, ImageError> {
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            what: "image config",
            source,
        })
    }

    /// Records one step: a layer (its diffID) or, with `None`, a config-only
    /// step (`empty_layer`).
    pub fn push_step(
        &mut self,
        diff_id: Option<Digest>,
        created: Option<String>,
        created_by: impl Into<String>,
    ) {
        let empty_layer = diff_id.is_none();
        if let Some(d) = diff_id {
            self.rootfs.diff_ids.push(d);
        }
        self.history.push(History {
            created,
            created_by: Some(created_by.into()),
            empty_layer,
            ..History::default()
        });
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

impl Descriptor {
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.into(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        }
    }
}

/// Declares a document with the envelope manifests and indexes share, in
/// this field order (it is their JSON's, and so their digests'):
/// `schemaVersion`, `mediaType` (left out when empty), the document's own
/// fields, `annotations` (left out when empty).
macro_rules! versioned_document {
    ($(#[$doc:meta])* $name:ident { $($(#[$field_doc:meta])* $field:ident: $ty:ty,)* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {
            #[serde(rename = "schemaVersion")]
            pub schema_version: u32,
            #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
            pub media_type: String,
            $($(#[$field_doc])* pub $field: $ty,)*
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub annotations: BTreeMap<String, String>,
        }
    };
}

versioned_document! {
    /// An image manifest (OCI, or Docker schema2 which has the same shape).
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    }
}

impl Manifest {
    /// An OCI manifest for a config blob and its layers.
    pub fn oci(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_MANIFEST.into(),
            config,
            layers,
            annotations: BTreeMap::new(),
        }
    }

    /// The Docker schema2 form of the same image: media types translated
    /// (layer compression kept), annotations dropped (schema2 has none).
    pub fn to_docker(&self) -> Self {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let mt = crate::compress::Compression::from_media_type(&l.media_type).map_or_else(
                    || l.media_type.clone(),
                    |c| c.docker_layer_media_type().to_owned(),
                );
                Descriptor::new(mt, l.digest, l.size)
            })
            .collect();
        Self {
            schema_version: 2,
            media_type: MEDIA_TYPE_DOCKER_MANIFEST.into(),
            config: Descriptor::new(
                MEDIA_TYPE_DOCKER_CONFIG,
                self.config.digest,
                self.config.size,
            ),
            layers,
            annotations: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn from_json(data: &[u8]) -> Result<Self, ImageError> {
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            what: "image manifest",
            source,
        })
    }
}

versioned_document! {
    /// An image index (OCI) / manifest list (Docker); also an OCI layout's
    /// `index.json`.
    Index {
        manifests: Vec<Descriptor>,
    }
}

impl Index {
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        Self {
            schema_version: 2,
            media_type: MEDIA_TYPE_OCI_INDEX.into(),
            manifests,
            annotations: BTreeMap::new(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        canonical_json(self)
    }

    pub fn from_json(data: &[u8]) -> Result<Self, ImageError> {
        serde_json::from_slice(data).map_err(|source| ImageError::Json {
            what: "image index",
            source,
        })
    }
}

/// Compact JSON with a fixed field order (struct order, sorted maps): the
/// bytes that get hashed.
pub fn canonical_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec cannot fail: no maps with
    // non-string keys, no failing Serialize impls.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageConfig {
        let mut c = ImageConfig::new("linux", "amd64");
        c.created = Some(rfc3339(0).unwrap());
        c.config.env = Some(vec!["PATH=/usr/bin:/bin".into()]);
        c.config.cmd = Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()]);
        c.config.healthcheck = Some(HealthConfig {
            test: vec!["CMD".into(), "true".into()],
            interval: 30_000_000_000,
            ..Default::default()
        });
        c.config.exposed_ports = Some(BTreeMap::from([("80/tcp".to_owned(), Empty {})]));
        c.config.shell = Some(vec!["/bin/bash".into(), "-c".into()]);
        c.config.on_build = Some(vec!["RUN true".into()]);
        c.config.args_escaped = Some(true);
        c.push_step(
            Some(Digest::of(b"layer")),
            c.created.clone(),
            "RUN /bin/sh -c true # buildkit",
        );
        c.push_step(None, c.created.clone(), "CMD [\"/bin/sh\"]");
        c
    }

    #[test]
    fn config_round_trips_and_matches_docker_field_names() {
        let c = sample();
        let json = c.to_json();
        let s = String::from_utf8(json.clone()).unwrap();
        assert!(s.starts_with(
            r#"{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"#
        ));
        for f in [
            "\"Healthcheck\":{\"Test\":[\"CMD\",\"true\"],\"Interval\":30000000000}",
            "\"ExposedPorts\":{\"80/tcp\":{}}",
            "\"OnBuild\"",
            "\"Shell\"",
            "\"ArgsEscaped\":true",
            "\"empty_layer\":true",
        ] {
            assert!(s.contains(f), "{f} missing from {s}");
        }
        assert_eq!(ImageConfig::from_json(&json).unwrap(), c);
        // oci-spec accepts it (our extra Docker fields are ignored there).
        let o: oci_spec::image::ImageConfiguration = serde_json::from_slice(&json).unwrap();
        assert_eq!(o.rootfs().diff_ids().len(), 1);
        assert_eq!(o.history().as_ref().map(Vec::len), Some(2));
    }

    #[test]
    fn unknown_fields_survive() {
        let j = br#"{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[]},"docker_version":"20.10"}"#;
        let c = ImageConfig::from_json(j).unwrap();
        assert!(
            String::from_utf8(c.to_json())
                .unwrap()
                .contains("\"docker_version\":\"20.10\"")
        );
    }

    #[test]
    fn manifest_and_index_parse_with_oci_spec() {
        let cfg = sample().to_json();
        let config = Descriptor::new(MEDIA_TYPE_OCI_CONFIG, Digest::of(&cfg), cfg.len() as u64);
        let layer = Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Digest::of(b"l"),
            1,
        );
        let m = Manifest::oci(config, vec![layer]);
        let mj = m.to_json();
        let o: oci_spec::image::ImageManifest = serde_json::from_slice(&mj).unwrap();
        assert_eq!(o.layers().len(), 1);
        let d = m.to_docker();
        assert_eq!(
            d.layers[0].media_type,
            "application/vnd.docker.image.rootfs.diff.tar.zstd"
        );
        let mut desc = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(&mj), mj.len() as u64);
        desc.annotations
            .insert(ANNOTATION_REF_NAME.into(), "latest".into());
        let i = Index::new(vec![desc]);
        let _: oci_spec::image::ImageIndex = serde_json::from_slice(&i.to_json()).unwrap();
        assert_eq!(Index::from_json(&i.to_json()).unwrap(), i);
    }

    /// The exact bytes of a manifest, an index (with a platform, and
    /// without a media type) and a config with every platform field: they
    /// are what digests and image IDs are made of, so the declarations'
    /// field order and skipping rules are pinned here.
    #[test]
    fn serialized_bytes_are_pinned() {
        let mut m = Manifest::oci(
            Descriptor::new(MEDIA_TYPE_OCI_CONFIG, Digest::of(b"c"), 1),
            vec![Descriptor::new(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Digest::of(b"l"),
                2,
            )],
        );
        m.annotations.insert("a".into(), "b".into());
        let mut d = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"m"), 3);
        d.platform = Some(Platform {
            architecture: "arm".into(),
            os: "windows".into(),
            os_version: Some("10.0".into()),
            variant: Some("v7".into()),
        });
        let mut i = Index::new(vec![d]);
        i.media_type = String::new();
        let mut c = ImageConfig::new("linux", "arm64");
        c.platform.variant = Some("v8".into());
        c.platform.os_version = Some("1".into());
        c.author = Some("me".into());
        let got = [m.to_json(), i.to_json(), c.to_json()].map(|b| String::from_utf8(b).unwrap());
        assert_eq!(
            got[0],
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6","size":1},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:acac86c0e609ca906f632b0e2dacccb2b77d22b0621f20ebece1a4835b93f6f0","size":2}],"annotations":{"a":"b"}}"#
        );
        assert_eq!(
            got[1],
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:62c66a7a5dd70c3146618063c344e531e6d4b59e379808443ce962b3abd63c5a","size":3,"platform":{"architecture":"arm","os":"windows","os.version":"10.0","variant":"v7"}}]}"#
        );
        assert_eq!(
            got[2],
            r#"{"author":"me","architecture":"arm64","variant":"v8","os":"linux","os.version":"1","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#
        );
        assert_eq!(Manifest::from_json(got[0].as_bytes()).unwrap(), m);
        assert_eq!(Index::from_json(got[1].as_bytes()).unwrap(), i);
        assert_eq!(ImageConfig::from_json(got[2].as_bytes()).unwrap(), c);
    }

    /// `ImageConfig` as it was before its platform fields became a
    /// [`Platform`]: its bytes are hashed into image IDs, so the new shape
    /// must write and read exactly what this one did.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct FlatPlatformConfig {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        created: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        architecture: String,
        #[serde(default)]
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<String>,
        os: String,
        #[serde(rename = "os.version")]
        #[serde(default, skip_serializing_if = "Option::is_none")]
        os_version: Option<String>,
        #[serde(default)]
        config: ContainerConfig,
        rootfs: RootFs,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        history: Vec<History>,
        #[serde(flatten)]
        extra: BTreeMap<String, serde_json::Value>,
    }

    #[test]
    fn platform_fields_serialize_as_the_flat_config_did() {
        let extras = [
            BTreeMap::new(),
            BTreeMap::from([
                ("os.features".to_owned(), serde_json::json!(["win32k"])),
                ("container".to_owned(), serde_json::json!("abc")),
                ("docker_version".to_owned(), serde_json::json!("28.5.0")),
                ("zz".to_owned(), serde_json::json!({"n": 1.5})),
            ]),
        ];
        let mut cases = 0;
        for variant in [None, Some("v8")] {
            for os_version in [None, Some("10.0.17763")] {
                for extra in &extras {
                    let mut new = sample();
                    new.platform = Platform {
                        architecture: "arm64".into(),
                        os: "linux".into(),
                        os_version: os_version.map(Into::into),
                        variant: variant.map(Into::into),
                    };
                    new.author = Some("me".into());
                    new.extra = extra.clone();
                    let old = FlatPlatformConfig {
                        created: new.created.clone(),
                        author: new.author.clone(),
                        architecture: "arm64".into(),
                        variant: variant.map(Into::into),
                        os: "linux".into(),
                        os_version: os_version.map(Into::into),
                        config: new.config.clone(),
                        rootfs: new.rootfs.clone(),
                        history: new.history.clone(),
                        extra: extra.clone(),
                    };
                    let (new_bytes, old_bytes) = (new.to_json(), canonical_json(&old));
                    assert_eq!(
                        String::from_utf8_lossy(&new_bytes),
                        String::from_utf8_lossy(&old_bytes)
                    );
                    assert_eq!(ImageConfig::from_json(&old_bytes).unwrap(), new);
                    let back: FlatPlatformConfig = serde_json::from_slice(&new_bytes).unwrap();
                    assert_eq!(back, old);
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 8);
    }
}
