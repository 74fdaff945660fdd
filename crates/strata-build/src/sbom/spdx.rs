//! The SPDX 2.3 JSON document (<https://spdx.github.io/spdx-spec/v2.3/>),
//! laid out as syft's `spdx-json` encoder (spdx/tools-golang's `v2_3`
//! structs, fields in their order) writes it for BuildKit's scanner: a
//! package per package found, with its purl as an external reference and
//! the file it was found in related to it (`OTHER`, "evident-by"), each
//! such file with its sha256 and, as BuildKit adds to the final image's
//! SBOM, the layer it comes from (`layerID: ...`). Nothing in it depends
//! on the clock or on chance: `created` is the build epoch, the namespace
//! and IDs are derived from the image and the packages.

use serde::Serialize;
use strata_oci::Digest;

use super::Scan;

/// What names and dates a document.
pub(crate) struct DocumentInfo<'a> {
    /// `sbom` for the image, `sbom-STAGE` for a stage (BuildKit's names).
    pub(crate) name: &'a str,
    /// The image (or stage state) scanned: its config digest or key.
    pub(crate) subject: &'a Digest,
    /// RFC 3339.
    pub(crate) created: &'a str,
}

#[derive(Serialize)]
struct CreationInfo<'a> {
    creators: Vec<String>,
    created: &'a str,
}

#[derive(Serialize)]
struct Checksum {
    algorithm: &'static str,
    #[serde(rename = "checksumValue")]
    value: String,
}

#[derive(Serialize)]
struct ExternalRef {
    #[serde(rename = "referenceCategory")]
    category: &'static str,
    #[serde(rename = "referenceType")]
    kind: &'static str,
    #[serde(rename = "referenceLocator")]
    locator: String,
}

#[derive(Serialize)]
struct SpdxPackage {
    name: String,
    #[serde(rename = "SPDXID")]
    id: String,
    #[serde(rename = "versionInfo")]
    version: String,
    supplier: &'static str,
    #[serde(rename = "downloadLocation")]
    download_location: &'static str,
    #[serde(rename = "filesAnalyzed")]
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(rename = "sourceInfo", skip_serializing_if = "String::is_empty")]
    source_info: String,
    #[serde(rename = "licenseConcluded")]
    license_concluded: &'static str,
    #[serde(rename = "licenseDeclared")]
    license_declared: String,
    #[serde(rename = "copyrightText")]
    copyright: &'static str,
    #[serde(rename = "externalRefs", skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    #[serde(
        rename = "primaryPackagePurpose",
        skip_serializing_if = "Option::is_none"
    )]
    purpose: Option<&'static str>,
}

#[derive(Serialize)]
struct SpdxFile {
    #[serde(rename = "fileName")]
    name: String,
    #[serde(rename = "SPDXID")]
    id: String,
    checksums: Vec<Checksum>,
    #[serde(rename = "licenseConcluded")]
    license_concluded: &'static str,
    #[serde(rename = "copyrightText")]
    copyright: &'static str,
    comment: String,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct Relationship {
    #[serde(rename = "spdxElementId")]
    element: String,
    #[serde(rename = "relatedSpdxElement")]
    related: String,
    #[serde(rename = "relationshipType")]
    kind: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    comment: String,
}

#[derive(Serialize)]
struct ExtractedLicense {
    #[serde(rename = "licenseId")]
    id: String,
    #[serde(rename = "extractedText")]
    text: String,
}

#[derive(Serialize)]
struct Document<'a> {
    #[serde(rename = "spdxVersion")]
    version: &'static str,
    #[serde(rename = "dataLicense")]
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    id: &'static str,
    name: &'a str,
    #[serde(rename = "documentNamespace")]
    namespace: String,
    #[serde(rename = "creationInfo")]
    creation: CreationInfo<'a>,
    packages: Vec<SpdxPackage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<SpdxFile>,
    #[serde(
        rename = "hasExtractedLicensingInfos",
        skip_serializing_if = "Vec::is_empty"
    )]
    extracted: Vec<ExtractedLicense>,
    relationships: Vec<Relationship>,
}

/// An SPDX ID's idstring: letters, digits, `.` and `-` only.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update(b"\0");
    }
    h.finalize().to_hex()[..16].to_owned()
}

/// A declared licence as SPDX wants it: an expression of licence IDs as
/// it is, anything else (free text) as a `LicenseRef-` whose text is
/// recorded in the document.
fn license_expression(stated: &str, extracted: &mut Vec<ExtractedLicense>) -> String {
    // IDs (letters, digits, `.-+:`) joined by operators, parentheses
    // allowed: `MIT OR (Apache-2.0 WITH LLVM-exception)`.
    let tokens: Vec<&str> = stated
        .split_whitespace()
        .map(|t| t.trim_matches(|c| c == '(' || c == ')'))
        .collect();
    let simple = !tokens.is_empty()
        && tokens.iter().enumerate().all(|(i, tok)| {
            let operator = matches!(*tok, "AND" | "OR" | "WITH");
            if i % 2 == 1 {
                operator
            } else {
                !operator
                    && !tok.is_empty()
                    && tok
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | ':'))
            }
        });
    if simple {
        return stated.to_owned();
    }
    let id = format!("LicenseRef-{}", id_part(stated));
    if !extracted.iter().any(|e| e.id == id) {
        extracted.push(ExtractedLicense {
            id: id.clone(),
            text: stated.to_owned(),
        });
    }
    id
}

/// The document's JSON (compact, as statements carry it).
pub(crate) fn document(scan: &Scan, info: &DocumentInfo<'_>) -> Result<Vec<u8>, String> {
    let root_id = format!("SPDXRef-DocumentRoot-Image-{}", id_part(info.name));
    let mut packages = vec![SpdxPackage {
        name: info.name.to_owned(),
        id: root_id.clone(),
        version: info.subject.to_string(),
        supplier: "NOASSERTION",
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: vec![Checksum {
            algorithm: "SHA256",
            value: info.subject.hex(),
        }],
        source_info: String::new(),
        license_concluded: "NOASSERTION",
        license_declared: "NOASSERTION".into(),
        copyright: "NOASSERTION",
        external_refs: Vec::new(),
        purpose: Some("CONTAINER"),
    }];
    let mut relationships = vec![Relationship {
        element: "SPDXRef-DOCUMENT".into(),
        related: root_id.clone(),
        kind: "DESCRIBES",
        comment: String::new(),
    }];
    let file_id = |path: &str| {
        let base = path.rsplit('/').next().unwrap_or(path);
        format!("SPDXRef-File-{}-{}", id_part(base), short_hash(&[path]))
    };
    let mut extracted = Vec::new();
    for p in &scan.packages {
        let id = format!(
            "SPDXRef-Package-{}-{}-{}",
            p.kind,
            id_part(&p.name),
            short_hash(&[&p.purl, &p.found_in])
        );
        let license_declared = match &p.license {
            Some(l) => license_expression(l, &mut extracted),
            None => "NOASSERTION".to_owned(),
        };
        relationships.push(Relationship {
            element: root_id.clone(),
            related: id.clone(),
            kind: "CONTAINS",
            comment: String::new(),
        });
        relationships.push(Relationship {
            element: id.clone(),
            related: file_id(&p.found_in),
            kind: "OTHER",
            comment: "evident-by: indicates the package's existence is evident by the given file"
                .into(),
        });
        packages.push(SpdxPackage {
            name: p.name.clone(),
            id,
            version: p.version.clone(),
            supplier: "NOASSERTION",
            download_location: "NOASSERTION",
            files_analyzed: false,
            checksums: Vec::new(),
            source_info: format!("{}: {}", p.source_info, p.found_in),
            license_concluded: "NOASSERTION",
            license_declared,
            copyright: "NOASSERTION",
            external_refs: vec![ExternalRef {
                category: "PACKAGE-MANAGER",
                kind: "purl",
                locator: p.purl.clone(),
            }],
            purpose: None,
        });
    }
    let files = scan
        .files
        .iter()
        .map(|f| SpdxFile {
            name: f.path.clone(),
            id: file_id(&f.path),
            checksums: vec![Checksum {
                algorithm: "SHA256",
                value: f.sha256.clone(),
            }],
            license_concluded: "NOASSERTION",
            copyright: "NOASSERTION",
            comment: format!("layerID: {}", f.layer),
        })
        .collect();
    relationships[1..].sort();
    let doc = Document {
        version: "SPDX-2.3",
        data_license: "CC0-1.0",
        id: "SPDXRef-DOCUMENT",
        name: info.name,
        namespace: format!(
            "https://spdx.org/spdxdocs/strata/{}-{}",
            id_part(info.name),
            info.subject.hex()
        ),
        creation: CreationInfo {
            creators: vec![format!("Tool: strata-{}", env!("CARGO_PKG_VERSION"))],
            created: info.created,
        },
        packages,
        files,
        extracted,
        relationships,
    };
    serde_json::to_vec(&doc).map_err(|e| format!("writing the SPDX document: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::{FileRecord, Package};

    #[test]
    fn documents_are_spdx_and_stable() {
        let scan = Scan {
            packages: vec![Package {
                name: "musl".into(),
                version: "1.2.5-r0".into(),
                purl: "pkg:apk/alpine/musl@1.2.5-r0".into(),
                license: Some("MIT".into()),
                kind: "apk",
                found_in: "/lib/apk/db/installed".into(),
                source_info: "acquired package info from APK DB",
            }],
            files: vec![FileRecord {
                path: "/lib/apk/db/installed".into(),
                sha256: "00".repeat(32),
                layer: Digest::of(b"layer"),
            }],
        };
        let subject = Digest::of(b"image");
        let info = DocumentInfo {
            name: "sbom",
            subject: &subject,
            created: "2024-01-01T00:00:00Z",
        };
        let a = document(&scan, &info).unwrap();
        assert_eq!(a, document(&scan, &info).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["spdxVersion"], "SPDX-2.3");
        assert_eq!(v["creationInfo"]["created"], "2024-01-01T00:00:00Z");
        assert_eq!(v["packages"][1]["name"], "musl");
        assert_eq!(v["packages"][1]["licenseDeclared"], "MIT");
        assert_eq!(
            v["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:apk/alpine/musl@1.2.5-r0"
        );
        assert_eq!(
            v["files"][0]["comment"],
            format!("layerID: {}", Digest::of(b"layer"))
        );
        // Every relationship names elements the document has.
        let ids: Vec<&str> = v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .chain(v["files"].as_array().unwrap())
            .map(|e| e["SPDXID"].as_str().unwrap())
            .chain(["SPDXRef-DOCUMENT"])
            .collect();
        for r in v["relationships"].as_array().unwrap() {
            assert!(ids.contains(&r["spdxElementId"].as_str().unwrap()), "{r}");
            assert!(
                ids.contains(&r["relatedSpdxElement"].as_str().unwrap()),
                "{r}"
            );
        }
        let mut extracted = Vec::new();
        assert_eq!(
            license_expression("MIT OR (Apache-2.0 WITH LLVM-exception)", &mut extracted),
            "MIT OR (Apache-2.0 WITH LLVM-exception)"
        );
        assert_eq!(
            license_expression("Apache 2.0", &mut extracted),
            "LicenseRef-Apache-2.0"
        );
        assert_eq!(extracted.len(), 1);
    }
}
