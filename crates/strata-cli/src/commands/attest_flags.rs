//! `--provenance`, `--sbom`, `--attest` and `--annotation`, with buildx's
//! parsing (`util/buildflags/attests.go`, `export.go`) and defaults
//! (`build/opt.go`).

use strata_build::SbomRequest;
use strata_build::annotations::{Annotation, parse_annotation_flag};
use strata_build::provenance::ProvenanceRequest;

use crate::exit::UsageError;

/// One `--attest` value (or a shorthand's canonical form).
struct Attest {
    kind: String,
    disabled: bool,
    attrs: Vec<(String, String)>,
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_attest(spec: &str) -> Result<Attest, UsageError> {
    let mut a = Attest {
        kind: String::new(),
        disabled: false,
        attrs: Vec::new(),
    };
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            return Err(UsageError(format!(
                "--attest {spec}: invalid value {field}"
            )));
        };
        match k.trim().to_lowercase().as_str() {
            "type" => a.kind = v.to_owned(),
            "disabled" => {
                a.disabled = parse_bool(v)
                    .ok_or_else(|| UsageError(format!("--attest {spec}: invalid value {field}")))?;
            }
            _ => a.attrs.push((k.to_owned(), v.to_owned())),
        }
    }
    if a.kind.is_empty() {
        return Err(UsageError(format!(
            "--attest {spec}: attestation type not specified"
        )));
    }
    Ok(a)
}

/// buildx's `CanonicalizeAttest`: `--provenance=true` is
/// `type=provenance,disabled=false`, `--provenance=mode=max` is
/// `type=provenance,mode=max`.
fn canonical(kind: &str, value: &str) -> String {
    match parse_bool(value) {
        Some(b) => format!("type={kind},disabled={}", !b),
        None => format!("type={kind},{value}"),
    }
}

/// Every attestation asked for: `--attest` values, then `--provenance`
/// and `--sbom` in their canonical forms (later ones win for a type, as
/// buildx's `removeAttestDupes`).
fn attest_specs(attests: &[String], provenance: Option<&str>, sbom: Option<&str>) -> Vec<String> {
    let mut specs: Vec<String> = attests.to_vec();
    if let Some(v) = provenance.filter(|v| !v.is_empty()) {
        specs.push(canonical("provenance", v));
    }
    if let Some(v) = sbom.filter(|v| !v.is_empty()) {
        specs.push(canonical("sbom", v));
    }
    specs
}

/// The SBOM a build makes from `--attest type=sbom,...` and `--sbom`
/// (none unless asked, as buildx). strata scans the image itself, so a
/// `generator=` image is refused; `scan-stage=true` also scans the stages
/// the build ran (BuildKit's `BUILDKIT_SBOM_SCAN_STAGE`).
pub(crate) fn sbom(
    attests: &[String],
    provenance: Option<&str>,
    sbom: Option<&str>,
) -> Result<Option<SbomRequest>, UsageError> {
    let mut asked: Option<(String, Attest)> = None;
    for spec in attest_specs(attests, provenance, sbom) {
        let a = parse_attest(&spec)?;
        if a.kind == "sbom" {
            asked = Some((spec, a));
        }
    }
    let Some((spec, a)) = asked.filter(|(_, a)| !a.disabled) else {
        return Ok(None);
    };
    let mut request = SbomRequest::default();
    for (k, v) in &a.attrs {
        match k.trim().to_lowercase().as_str() {
            "generator" => {
                return Err(UsageError(format!(
                    "--attest {spec}: generator={v} is not supported: strata scans the image in process (dpkg, apk, Python, npm, Go and cargo-auditable packages) and runs no scanner image; leave generator out"
                )));
            }
            "scan-stage" => {
                request.scan_stage = parse_bool(v).ok_or_else(|| {
                    UsageError(format!("--attest {spec}: invalid scan-stage value {v:?}"))
                })?;
            }
            "scan-context" => {
                return Err(UsageError(format!(
                    "--attest {spec}: scan-context is not supported: strata scans the image and its stages, not the build context"
                )));
            }
            other => {
                return Err(UsageError(format!(
                    "--attest {spec}: unknown SBOM parameter {other:?} (strata knows scan-stage)"
                )));
            }
        }
    }
    Ok(Some(request))
}

/// The provenance a build makes from `--attest`, `--provenance` and
/// `--sbom` (later ones win for a type, as buildx's `removeAttestDupes`),
/// and buildx's default `mode=min,inline-only=true` when provenance is not
/// mentioned (unless `BUILDX_NO_DEFAULT_ATTESTATIONS` is true).
pub(crate) fn provenance(
    attests: &[String],
    provenance: Option<&str>,
    sbom: Option<&str>,
) -> Result<Option<ProvenanceRequest>, UsageError> {
    let mut asked: Option<Attest> = None;
    for spec in &attest_specs(attests, provenance, sbom) {
        let a = parse_attest(spec)?;
        match a.kind.as_str() {
            "provenance" => asked = Some(a),
            // Read by `sbom`.
            "sbom" => {}
            other => {
                return Err(UsageError(format!(
                    "--attest {spec}: unknown attestation type {other:?}"
                )));
            }
        }
    }
    match asked {
        Some(a) if a.disabled => Ok(None),
        Some(a) => ProvenanceRequest::from_attrs(&a.attrs)
            .map(Some)
            .map_err(|e| UsageError(format!("--attest type=provenance: {e}"))),
        None => {
            let off = match std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS") {
                Ok(v) => parse_bool(&v).ok_or_else(|| {
                    UsageError(format!("invalid BUILDX_NO_DEFAULT_ATTESTATIONS: {v:?}"))
                })?,
                Err(_) => false,
            };
            Ok((!off).then(ProvenanceRequest::buildx_default))
        }
    }
}

/// The provenance and the SBOM a build makes (see [`provenance`], [`sbom`]).
pub(crate) fn attestations(
    attests: &[String],
    provenance_flag: Option<&str>,
    sbom_flag: Option<&str>,
) -> Result<(Option<ProvenanceRequest>, Option<SbomRequest>), UsageError> {
    Ok((
        provenance(attests, provenance_flag, sbom_flag)?,
        sbom(attests, provenance_flag, sbom_flag)?,
    ))
}

/// Every `--annotation`.
pub(crate) fn annotations(specs: &[String]) -> Result<Vec<Annotation>, UsageError> {
    let mut out = Vec::new();
    for s in specs.iter().filter(|s| !s.is_empty()) {
        out.extend(
            parse_annotation_flag(s).map_err(|e| UsageError(format!("parse annotations: {e}")))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_build::provenance::{ProvenanceMode, SlsaVersion};

    #[test]
    fn shorthands_and_attests_combine_as_buildx() {
        let p = provenance(&[], Some("true"), None).unwrap().unwrap();
        assert_eq!(p.mode, ProvenanceMode::Max);
        assert!(!p.inline_only);
        assert!(provenance(&[], Some("false"), None).unwrap().is_none());
        let p = provenance(&["type=provenance,mode=min,version=v1".into()], None, None)
            .unwrap()
            .unwrap();
        assert_eq!((p.mode, p.version), (ProvenanceMode::Min, SlsaVersion::V1));
        // --provenance comes after --attest, so it wins.
        assert!(
            provenance(&["type=provenance,mode=max".into()], Some("0"), None)
                .unwrap()
                .is_none()
        );
        assert!(provenance(&[], None, Some("true")).is_ok());
        assert!(provenance(&["type=sbom,disabled=true".into()], None, None).is_ok());
        assert!(provenance(&["type=vex".into()], None, None).is_err());
        assert!(provenance(&["mode=max".into()], None, None).is_err());
    }

    #[test]
    fn sbom_flags_parse_as_buildx() {
        assert_eq!(sbom(&[], None, None).unwrap(), None);
        assert_eq!(
            sbom(&[], None, Some("true")).unwrap(),
            Some(SbomRequest::default())
        );
        assert_eq!(sbom(&[], None, Some("false")).unwrap(), None);
        assert_eq!(
            sbom(&["type=sbom,scan-stage=true".into()], None, None).unwrap(),
            Some(SbomRequest { scan_stage: true })
        );
        // --sbom comes after --attest, so it wins.
        assert_eq!(sbom(&["type=sbom".into()], None, Some("0")).unwrap(), None);
        let e = sbom(&[], None, Some("generator=docker/buildkit-syft-scanner")).unwrap_err();
        assert!(e.0.contains("scans the image in process"), "{}", e.0);
        assert!(sbom(&["type=sbom,scan-stage=maybe".into()], None, None).is_err());
        assert!(sbom(&["type=sbom,scan-context=true".into()], None, None).is_err());
        assert!(sbom(&["type=sbom,bogus=1".into()], None, None).is_err());
        // Provenance attrs do not leak into the SBOM and back.
        assert!(
            sbom(
                &["type=provenance,mode=max".into(), "type=sbom".into()],
                None,
                None
            )
            .unwrap()
            .is_some()
        );
    }
}
