//! apk's database, `lib/apk/db/installed` (syft's `alpine` cataloger,
//! `parse_apk_db.go`): one paragraph per package, one `X:value` line per
//! field (`P` name, `V` version, `A` arch, `L` licence, `o` origin).

use super::Package;
use super::os_release::Distro;
use super::purl::Purl;

/// The packages of an `installed` file.
pub(crate) fn packages(text: &str, found_in: &str, distro: &Distro) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let field = |key: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
                .unwrap_or_default()
                .trim()
        };
        let (name, version) = (field("P"), field("V"));
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let namespace = if distro.id.is_empty() {
            "alpine"
        } else {
            distro.id.as_str()
        };
        let purl = Purl {
            kind: "apk",
            namespace,
            name,
            version,
            qualifiers: vec![
                ("arch", field("A").to_owned()),
                ("upstream", field("o").to_owned()),
                ("distro", distro.qualifier()),
            ],
        };
        let license = field("L");
        out.push(Package {
            name: name.to_owned(),
            version: version.to_owned(),
            purl: purl.to_string(),
            license: (!license.is_empty()).then(|| license.to_owned()),
            kind: "apk",
            found_in: found_in.to_owned(),
            source_info: "acquired package info from APK DB",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two entries as Alpine 3.20's `apk add` writes them (the file lists
    /// follow each package's fields).
    const INSTALLED: &str = "C:Q1Kf0q5/9y4sBDv5ULcMnwlLSN0nE=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:411308\nI:641024\nT:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\no:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nt:1712241429\nc:9b2ff1ae0d0ce6ec2c4be9e1d4a8c4ec9d1e7f3a\nF:lib\nR:ld-musl-x86_64.so.1\na:0:0:755\nZ:Q1qvsvpFIeqS5f2mUIUO6LdBydO6A=\nR:libc.musl-x86_64.so.1\n\nC:Q1abc=\nP:busybox-binsh\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\n";

    #[test]
    fn reads_apk_installed() {
        let alpine = Distro {
            id: "alpine".into(),
            version_id: "3.20.3".into(),
        };
        let found = packages(INSTALLED, "/lib/apk/db/installed", &alpine);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0].purl,
            "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&upstream=musl&distro=alpine-3.20.3"
        );
        assert_eq!(found[0].license.as_deref(), Some("MIT"));
        assert_eq!(
            (found[1].name.as_str(), found[1].version.as_str()),
            ("busybox-binsh", "1.36.1-r29")
        );
    }
}
