//! Installed Python distributions (syft's `python` cataloger,
//! `parse_wheel_egg.go`): a wheel's `NAME.dist-info/METADATA` or an egg's
//! `NAME.egg-info/PKG-INFO` (or the `.egg-info` file itself), core metadata
//! in RFC 822 headers: `Name`, `Version`, `License-Expression` or `License`.

use super::Package;
use super::purl::Purl;

/// The headers of a metadata file: up to the first blank line, continued
/// lines joined.
fn headers(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim(), v.trim().to_owned()));
        }
    }
    out
}

/// Whether `path` (relative, in the image) is the metadata of an
/// installed distribution.
pub(crate) fn is_metadata(path: &str) -> bool {
    let installed = path.contains("/site-packages/") || path.contains("/dist-packages/");
    installed
        && (path.ends_with(".dist-info/METADATA")
            || path.ends_with(".egg-info/PKG-INFO")
            || path.ends_with(".egg-info"))
}

/// The distribution a metadata file describes.
pub(crate) fn package(text: &str, found_in: &str) -> Option<Package> {
    let h = headers(text);
    let field = |name: &str| {
        h.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty() && *v != "UNKNOWN")
    };
    let (name, version) = (field("Name")?, field("Version")?);
    // A `License:` holding the whole licence text is no licence name.
    let license = field("License-Expression")
        .or_else(|| field("License").filter(|l| l.len() <= 100))
        .map(str::to_owned);
    Some(Package {
        name: name.to_owned(),
        version: version.to_owned(),
        purl: Purl {
            kind: "pypi",
            namespace: "",
            name,
            version,
            qualifiers: Vec::new(),
        }
        .to_string(),
        license,
        kind: "python",
        found_in: found_in.to_owned(),
        source_info: "acquired package info from installed python package manifest file",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_installed_distributions() {
        // Whatever Python packages Debian installed on this host.
        let roots = ["/usr/lib/python3/dist-packages"];
        for root in roots {
            let Ok(dir) = std::fs::read_dir(root) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = if name.ends_with(".dist-info") {
                    e.path().join("METADATA")
                } else if name.ends_with(".egg-info") && e.path().is_dir() {
                    e.path().join("PKG-INFO")
                } else {
                    continue;
                };
                let Ok(text) = std::fs::read_to_string(&meta) else {
                    continue;
                };
                let rel = meta.to_string_lossy().trim_start_matches('/').to_owned();
                assert!(is_metadata(&rel), "{rel}");
                let p = package(&text, &meta.to_string_lossy()).expect("name and version");
                assert!(p.purl.starts_with("pkg:pypi/"), "{}", p.purl);
                // The directory is named after the distribution
                // (`NAME-VERSION.dist-info`, Debian's `NAME.egg-info`).
                let norm = |s: &str| s.to_lowercase().replace('-', "_");
                assert!(
                    norm(&name).starts_with(&norm(&p.name)),
                    "{name} vs {}",
                    p.name
                );
                if name.ends_with(".dist-info") {
                    assert!(name.contains(&p.version), "{name} vs {}", p.version);
                }
            }
        }
        // A host without Python distributions checks the sample below only.
        let wheel = "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\nLicense: Apache 2.0\nClassifier: License :: OSI Approved :: Apache Software License\n\nbody text\nName: not-this\n";
        let p = package(
            wheel,
            "/usr/lib/python3/site-packages/requests-2.31.0.dist-info/METADATA",
        )
        .expect("a package");
        assert_eq!(p.purl, "pkg:pypi/requests@2.31.0");
        assert_eq!(p.license.as_deref(), Some("Apache 2.0"));
        assert!(package("Name: x\n", "/x").is_none());
        assert!(!is_metadata("usr/share/doc/x.dist-info/METADATA"));
    }
}
