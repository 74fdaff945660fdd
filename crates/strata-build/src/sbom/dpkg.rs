//! dpkg's database: `var/lib/dpkg/status` and, in distroless images,
//! one paragraph file per package in `var/lib/dpkg/status.d/` (syft's
//! `debian` cataloger, `parse_dpkg_db.go`). Every paragraph is a package
//! unless its status says `not-installed` (purged), which is also what
//! `dpkg-query -W` leaves out.

use super::Package;
use super::os_release::Distro;
use super::purl::Purl;

/// One paragraph's fields (continuation lines dropped: no field used here
/// spans lines).
fn paragraphs(text: &str) -> Vec<Vec<(&str, &str)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim(), v.trim()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The packages `text` (a status file, or a `status.d` entry) lists.
pub(crate) fn packages(text: &str, found_in: &str, distro: &Distro) -> Vec<Package> {
    let mut out = Vec::new();
    for p in paragraphs(text) {
        let field = |name: &str| {
            p.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
                .unwrap_or_default()
        };
        let (name, version) = (field("Package"), field("Version"));
        if name.is_empty() || version.is_empty() {
            continue;
        }
        if field("Status").split_whitespace().nth(2) == Some("not-installed") {
            continue;
        }
        // `Source: glibc (2.36-9)`: the source package, and its version
        // where it differs from the binary's.
        let source = field("Source");
        let (src_name, src_version) = match source.split_once(' ') {
            Some((n, v)) => (n, v.trim().trim_start_matches('(').trim_end_matches(')')),
            None => (source, ""),
        };
        let upstream = match (src_name, src_version) {
            ("", _) => String::new(),
            (n, "") => n.to_owned(),
            (n, v) => format!("{n}@{v}"),
        };
        let namespace = if distro.id.is_empty() {
            "debian"
        } else {
            distro.id.as_str()
        };
        let purl = Purl {
            kind: "deb",
            namespace,
            name,
            version,
            qualifiers: vec![
                ("arch", field("Architecture").to_owned()),
                ("upstream", upstream),
                ("distro", distro.qualifier()),
            ],
        };
        out.push(Package {
            name: name.to_owned(),
            version: version.to_owned(),
            purl: purl.to_string(),
            // The licence is in /usr/share/doc/NAME/copyright, in no
            // machine-readable form strata reads: NOASSERTION.
            license: None,
            kind: "deb",
            found_in: found_in.to_owned(),
            source_info: "acquired package info from DPKG DB",
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_dpkg_status() {
        let Ok(text) = std::fs::read_to_string("/var/lib/dpkg/status") else {
            strata_testutil::skip(
                "reads_the_hosts_dpkg_status",
                "this host has no /var/lib/dpkg/status",
            );
            return;
        };
        let debian = Distro {
            id: "debian".into(),
            version_id: "12".into(),
        };
        let found = packages(&text, "/var/lib/dpkg/status", &debian);
        // What dpkg itself lists, read independently: every Package line
        // whose paragraph is not purged.
        let expected = text
            .split("\n\n")
            .filter(|p| !p.contains("not-installed"))
            .filter(|p| p.lines().any(|l| l.starts_with("Version:")))
            .filter_map(|p| p.lines().find_map(|l| l.strip_prefix("Package: ")))
            .count();
        assert_eq!(found.len(), expected);
        assert!(expected > 10, "a host with dpkg has more packages");
        let dpkg = found
            .iter()
            .find(|p| p.name == "dpkg")
            .expect("dpkg itself");
        assert!(
            dpkg.purl
                .starts_with(&format!("pkg:deb/debian/dpkg@{}?arch=", dpkg.version)),
            "{}",
            dpkg.purl
        );
        assert!(dpkg.purl.ends_with("&distro=debian-12"), "{}", dpkg.purl);
    }

    #[test]
    fn source_and_status_are_read() {
        let text = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\nDescription: GNU C Library\n more text\n\nPackage: gone\nStatus: purge ok not-installed\nVersion: 1\n\nPackage: libgcc-s1\nStatus: install ok installed\nArchitecture: amd64\nSource: gcc-12 (12.2.0-14)\nVersion: 12.2.0-14\n";
        let found = packages(text, "/var/lib/dpkg/status", &Distro::default());
        let purls: Vec<&str> = found.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/debian/libc6@2.36-9+deb12u4?arch=amd64&upstream=glibc",
                "pkg:deb/debian/libgcc-s1@12.2.0-14?arch=amd64&upstream=gcc-12%4012.2.0-14",
            ]
        );
    }
}
