//! OCI annotations asked for with `--annotation` or an output's
//! `annotation*.KEY=VALUE` options, with buildx's and BuildKit's rules:
//! buildx's `--annotation [TYPES:]KEY=VALUE` (`util/buildflags/export.go`
//! `ParseAnnotations`), BuildKit's output keys
//! `annotation[-TYPE][[PLATFORM]].KEY` (`exporter/containerimage/exptypes/
//! annotations.go`) and where each type lands
//! (`exporter/containerimage/annotations.go`, `writer.go`).

use std::collections::BTreeMap;

use strata_oci::Platform;

use crate::error::{Result, other};

/// Where an annotation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnnotationTarget {
    /// The image manifest (`manifest`, and the default).
    Manifest,
    /// The manifest's descriptor in the index or layout (`manifest-descriptor`).
    ManifestDescriptor,
    /// The image index (`index`).
    Index,
    /// The index's descriptor in an OCI layout's `index.json` (`index-descriptor`).
    IndexDescriptor,
}

impl AnnotationTarget {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "manifest" => Self::Manifest,
            "manifest-descriptor" => Self::ManifestDescriptor,
            "index" => Self::Index,
            "index-descriptor" => Self::IndexDescriptor,
            _ => return None,
        })
    }
}

/// One annotation, optionally for one platform's manifest only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Annotation {
    pub target: AnnotationTarget,
    pub platform: Option<Platform>,
    pub key: String,
    pub value: String,
}

/// `TYPE[PLATFORM]` or `TYPE`: the platform in brackets, as buildx's
/// `^([a-z-]+)(?:\[([A-Za-z0-9_/-]+)\])?$`.
fn split_type(s: &str) -> Option<(&str, Option<&str>)> {
    let (ty, platform) = match s.split_once('[') {
        Some((t, rest)) => (t, Some(rest.strip_suffix(']')?)),
        None => (s, None),
    };
    let type_ok = !ty.is_empty() && ty.bytes().all(|b| b.is_ascii_lowercase() || b == b'-');
    let platform_ok = platform.is_none_or(|p| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'/' | b'-'))
    });
    (type_ok && platform_ok).then_some((ty, platform))
}

fn parse_platform(p: &str) -> Result<Platform> {
    p.parse::<Platform>()
        .map(|p| p.normalized())
        .map_err(|e| other(e.to_string()))
}

/// `--annotation KEY=VALUE` or `--annotation TYPES:KEY=VALUE`, where TYPES
/// is a comma-separated list of `manifest`, `manifest-descriptor`, `index`,
/// `index-descriptor`, each optionally with `[os/arch]`: one annotation per
/// type. Errors are buildx's.
pub fn parse_annotation_flag(spec: &str) -> Result<Vec<Annotation>> {
    let Some((k, value)) = spec.split_once('=') else {
        return Err(other(format!(
            "invalid annotation {spec:?}, expected key=value"
        )));
    };
    let Some((types, key)) = k.split_once(':') else {
        return Ok(vec![Annotation {
            target: AnnotationTarget::Manifest,
            platform: None,
            key: k.to_owned(),
            value: value.to_owned(),
        }]);
    };
    let mut out = Vec::new();
    for t in types.split(',') {
        let Some((ty, platform)) = split_type(t) else {
            return Err(other(format!(
                "invalid annotation type {t:?}, expected type and optional platform in square brackets"
            )));
        };
        let target = AnnotationTarget::parse(ty)
            .ok_or_else(|| other(format!("unknown annotation type {ty:?}")))?;
        out.push(Annotation {
            target,
            platform: platform.map(parse_platform).transpose()?,
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(out)
}

/// An output option `annotation[-TYPE][[PLATFORM]].KEY=VALUE`; `None` when
/// the option is not an annotation.
pub fn parse_annotation_option(key: &str, value: &str) -> Result<Option<Annotation>> {
    let Some(rest) = key.strip_prefix("annotation") else {
        return Ok(None);
    };
    // The key starts at the first `.` (a platform never holds one).
    let Some((head, name)) = rest.split_once('.') else {
        return Ok(None);
    };
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        return Ok(None);
    }
    let (target, platform) = if head.is_empty() {
        (AnnotationTarget::Manifest, None)
    } else if let Some(p) = head.strip_prefix('[') {
        let Some(p) = p.strip_suffix(']') else {
            return Ok(None);
        };
        (AnnotationTarget::Manifest, Some(p))
    } else if let Some(t) = head.strip_prefix('-') {
        let Some((ty, platform)) = split_type(t) else {
            return Ok(None);
        };
        let target = AnnotationTarget::parse(ty)
            .ok_or_else(|| other(format!("unrecognized annotation type {ty}")))?;
        (target, platform)
    } else {
        return Ok(None);
    };
    Ok(Some(Annotation {
        target,
        platform: platform.map(parse_platform).transpose()?,
        key: name.to_owned(),
        value: value.to_owned(),
    }))
}

/// What one output's annotations put where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations(pub Vec<Annotation>);

impl Annotations {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Annotations of `target` for `platform`'s manifest: those without a
    /// platform and those for exactly this one (BuildKit's
    /// `AnnotationsGroup.Platform`); index ones apply whatever their platform.
    pub fn of(&self, target: AnnotationTarget, platform: &Platform) -> BTreeMap<String, String> {
        let p = platform.normalized();
        self.0
            .iter()
            .filter(|a| a.target == target)
            .filter(|a| {
                matches!(
                    target,
                    AnnotationTarget::Index | AnnotationTarget::IndexDescriptor
                ) || a.platform.as_ref().is_none_or(|ap| *ap == p)
            })
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }

    /// The index's (or the index descriptor's) annotations.
    pub fn of_index(&self, target: AnnotationTarget) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|a| a.target == target)
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }

    /// Whether any annotation needs an index (`index`, `index-descriptor`).
    pub fn wants_index(&self) -> bool {
        self.0.iter().any(|a| {
            matches!(
                a.target,
                AnnotationTarget::Index | AnnotationTarget::IndexDescriptor
            )
        })
    }

    /// Refuses annotations for a platform the build does not make
    /// (BuildKit: "invalid annotation: no platform … found in source").
    pub fn check_platforms(&self, built: &[Platform]) -> Result<()> {
        for a in &self.0 {
            if let Some(p) = &a.platform
                && !built.iter().any(|b| b.normalized() == *p)
            {
                return Err(other(format!(
                    "invalid annotation: no platform {p} found in source"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_as_buildx() {
        let a = parse_annotation_flag("org.opencontainers.image.title=app").unwrap();
        assert_eq!(a[0].target, AnnotationTarget::Manifest);
        assert_eq!(a[0].key, "org.opencontainers.image.title");
        let a = parse_annotation_flag("index,manifest[linux/amd64]:k=v=w").unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].target, AnnotationTarget::Index);
        assert_eq!(a[1].platform, Some(Platform::new("linux", "amd64", None)));
        assert_eq!(a[1].value, "v=w");
        assert!(
            parse_annotation_flag("k")
                .unwrap_err()
                .to_string()
                .contains("expected key=value")
        );
        assert!(
            parse_annotation_flag("blob:k=v")
                .unwrap_err()
                .to_string()
                .contains("unknown annotation type \"blob\"")
        );
        assert!(parse_annotation_flag("Index:k=v").is_err());
    }

    #[test]
    fn output_options_parse_as_buildkit() {
        let a = parse_annotation_option("annotation.k", "v")
            .unwrap()
            .unwrap();
        assert_eq!(a.target, AnnotationTarget::Manifest);
        let a = parse_annotation_option("annotation-index-descriptor.a.b", "v")
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.target, a.key.as_str()),
            (AnnotationTarget::IndexDescriptor, "a.b")
        );
        let a = parse_annotation_option("annotation-manifest-descriptor[linux/arm64].k", "v")
            .unwrap()
            .unwrap();
        assert_eq!(a.platform, Some(Platform::new("linux", "arm64", None)));
        assert!(parse_annotation_option("annotation-blob.k", "v").is_err());
        assert!(parse_annotation_option("name", "v").unwrap().is_none());
    }

    #[test]
    fn platform_annotations_apply_to_their_platform() {
        let amd = Platform::new("linux", "amd64", None);
        let arm = Platform::new("linux", "arm64", None);
        let mut all = parse_annotation_flag("manifest[linux/arm64]:only=arm").unwrap();
        all.extend(parse_annotation_flag("every=one").unwrap());
        let a = Annotations(all);
        assert_eq!(a.of(AnnotationTarget::Manifest, &amd).len(), 1);
        assert_eq!(a.of(AnnotationTarget::Manifest, &arm).len(), 2);
        assert!(a.check_platforms(std::slice::from_ref(&amd)).is_err());
        assert!(a.check_platforms(&[amd, arm]).is_ok());
    }
}
