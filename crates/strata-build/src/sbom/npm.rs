//! npm packages installed under `node_modules` (syft's `javascript`
//! cataloger, `parse_package_json.go`): each `node_modules/NAME/package.json`
//! or `node_modules/@SCOPE/NAME/package.json` with a name and a version.

use serde_json::Value;

use super::Package;
use super::purl::Purl;

/// Whether `path` is an installed package's manifest (not one nested in a
/// package's own folders).
pub(crate) fn is_manifest(path: &str) -> bool {
    let Some(dir) = path.strip_suffix("/package.json") else {
        return false;
    };
    let parts: Vec<&str> = dir.split('/').collect();
    match parts.as_slice() {
        [.., "node_modules", name] => !name.starts_with('@') && !name.starts_with('.'),
        [.., "node_modules", scope, _] => scope.starts_with('@'),
        _ => false,
    }
}

/// The licence a manifest states: `"license": "MIT"`, `{"type": "MIT"}`,
/// or the old `"licenses": [{"type": ...}]` joined with `OR`.
fn license(v: &Value) -> Option<String> {
    match v.get("license") {
        Some(Value::String(s)) if !s.is_empty() => return Some(s.clone()),
        Some(Value::Object(o)) => {
            if let Some(Value::String(s)) = o.get("type") {
                return Some(s.clone());
            }
        }
        _ => {}
    }
    let types: Vec<&str> = v
        .get("licenses")?
        .as_array()?
        .iter()
        .filter_map(|l| l.get("type").and_then(Value::as_str))
        .collect();
    (!types.is_empty()).then(|| types.join(" OR "))
}

/// The package a manifest describes; `None` for one without a name and
/// version, or that is no JSON object.
pub(crate) fn package(json: &[u8], found_in: &str) -> Option<Package> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let full = v.get("name")?.as_str()?;
    let version = v.get("version")?.as_str()?;
    if full.is_empty() || version.is_empty() {
        return None;
    }
    let (namespace, name) = match full.split_once('/') {
        Some((scope, name)) if scope.starts_with('@') => (scope, name),
        _ => ("", full),
    };
    Some(Package {
        name: full.to_owned(),
        version: version.to_owned(),
        purl: Purl {
            kind: "npm",
            namespace,
            name,
            version,
            qualifiers: Vec::new(),
        }
        .to_string(),
        license: license(&v),
        kind: "npm",
        found_in: found_in.to_owned(),
        source_info: "acquired package info from installed node module manifest file",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_installed_manifests() {
        assert!(is_manifest("app/node_modules/express/package.json"));
        assert!(is_manifest("app/node_modules/@babel/core/package.json"));
        assert!(is_manifest("node_modules/a/node_modules/b/package.json"));
        assert!(!is_manifest("app/package.json"));
        assert!(!is_manifest("app/node_modules/express/lib/package.json"));
        assert!(!is_manifest("app/node_modules/@babel/package.json"));
        let p = package(
            br#"{"name":"@babel/core","version":"7.24.0","license":"MIT","dependencies":{}}"#,
            "/app/node_modules/@babel/core/package.json",
        )
        .expect("a package");
        assert_eq!(p.purl, "pkg:npm/%40babel/core@7.24.0");
        assert_eq!(p.name, "@babel/core");
        assert_eq!(p.license.as_deref(), Some("MIT"));
        let p = package(
            br#"{"name":"old","version":"0.1.0","licenses":[{"type":"MIT"},{"type":"Apache-2.0"}]}"#,
            "/x",
        )
        .expect("a package");
        assert_eq!(p.license.as_deref(), Some("MIT OR Apache-2.0"));
        assert!(package(br#"{"name":"nover"}"#, "/x").is_none());
        assert!(package(b"not json", "/x").is_none());
    }
}
