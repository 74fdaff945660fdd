//! Rust binaries built with `cargo auditable` (syft's `rust` binary
//! cataloger, via `rust-audit-info`): the ELF section `.dep-v0` holds the
//! dependency tree as zlib-compressed JSON, `{"packages": [{"name",
//! "version", "source", "kind", "dependencies", "root"}]}`. Build-only
//! dependencies (`"kind": "build"`) are not in the binary and are left out,
//! as syft does.

use std::io::Read;

use serde::Deserialize;

use super::Package;
use super::elf::Elf;
use super::purl::Purl;

/// The decompressed JSON is bounded (cargo-auditable itself refuses more
/// than 8 MiB).
const MAX_JSON: u64 = 8 << 20;

#[derive(Deserialize)]
struct Audit {
    packages: Vec<AuditPackage>,
}

#[derive(Deserialize)]
struct AuditPackage {
    name: String,
    version: String,
    #[serde(default)]
    kind: Option<String>,
}

/// A `.dep-v0` section's JSON, decompressed.
fn audit_json(section: &[u8]) -> Option<Vec<u8>> {
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(section)
        .take(MAX_JSON)
        .read_to_end(&mut json)
        .ok()?;
    Some(json)
}

/// The crates a `cargo auditable` binary was built from.
pub(crate) fn packages(data: &[u8], found_in: &str) -> Vec<Package> {
    match Elf::parse(data).and_then(|elf| elf.section(".dep-v0")) {
        Some(section) => packages_of_section(section, found_in),
        None => Vec::new(),
    }
}

fn packages_of_section(section: &[u8], found_in: &str) -> Vec<Package> {
    let Some(json) = audit_json(section) else {
        return Vec::new();
    };
    let Ok(audit) = serde_json::from_slice::<Audit>(&json) else {
        return Vec::new();
    };
    audit
        .packages
        .into_iter()
        .filter(|p| p.kind.as_deref() != Some("build"))
        .map(|p| Package {
            purl: Purl {
                kind: "cargo",
                namespace: "",
                name: &p.name,
                version: &p.version,
                qualifiers: Vec::new(),
            }
            .to_string(),
            name: p.name,
            version: p.version,
            license: None,
            kind: "rust-crate",
            found_in: found_in.to_owned(),
            source_info: "acquired package info from rust cargo manifest",
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section `cargo auditable build` (cargo-auditable 0.7) wrote
    /// into a binary crate `sbom-sample` 0.3.1 depending on `hex` 0.4.
    const SECTION: &[u8] = include_bytes!("../../../../testdata/sbom/cargo-auditable.dep-v0");

    #[test]
    fn reads_a_real_cargo_auditable_section() {
        let pkgs = packages_of_section(SECTION, "/usr/local/bin/sbom-sample");
        let purls: Vec<&str> = pkgs.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            ["pkg:cargo/hex@0.4.3", "pkg:cargo/sbom-sample@0.3.1"]
        );
        assert!(packages_of_section(b"not zlib", "/x").is_empty());
        // No ELF, or an ELF without the section: nothing.
        assert!(packages(SECTION, "/x").is_empty());
        let me = std::fs::read(std::env::current_exe().expect("test binary")).expect("read");
        assert!(packages(&me, "/x").is_empty());
    }
}
