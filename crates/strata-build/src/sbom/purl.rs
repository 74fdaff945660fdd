//! Package URLs (<https://github.com/package-url/purl-spec>) as syft writes
//! them through `packageurl-go`: namespace segments, name and version
//! path-escaped (Go's `url.PathEscape`, so `+` and `:` of Debian versions
//! stay), qualifiers in the order given, their values query-escaped.

/// One package URL.
pub(crate) struct Purl<'a> {
    pub(crate) kind: &'a str,
    /// `/`-separated; each segment escaped on its own.
    pub(crate) namespace: &'a str,
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
    /// Empty values are left out.
    pub(crate) qualifiers: Vec<(&'a str, String)>,
}

impl std::fmt::Display for Purl<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pkg:{}/", self.kind)?;
        for segment in self.namespace.split('/').filter(|s| !s.is_empty()) {
            // packageurl-go escapes a namespace's `@` (npm scopes) too.
            let escaped = strata_oci::attestation::path_escape(segment).replace('@', "%40");
            write!(f, "{escaped}/")?;
        }
        f.write_str(&strata_oci::attestation::path_escape(self.name))?;
        if !self.version.is_empty() {
            write!(f, "@{}", strata_oci::attestation::path_escape(self.version))?;
        }
        let mut sep = '?';
        for (k, v) in self.qualifiers.iter().filter(|(_, v)| !v.is_empty()) {
            write!(f, "{sep}{k}={}", query_escape(v))?;
            sep = '&';
        }
        Ok(())
    }
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_are_written_as_syft_writes_them() {
        let deb = Purl {
            kind: "deb",
            namespace: "debian",
            name: "login",
            version: "1:4.13+dfsg1-1+b1",
            qualifiers: vec![
                ("arch", "amd64".into()),
                ("upstream", "shadow@1:4.13+dfsg1-1".into()),
                ("distro", "debian-12".into()),
            ],
        };
        assert_eq!(
            deb.to_string(),
            "pkg:deb/debian/login@1:4.13+dfsg1-1+b1?arch=amd64&upstream=shadow%401%3A4.13%2Bdfsg1-1&distro=debian-12"
        );
        let npm = Purl {
            kind: "npm",
            namespace: "@babel",
            name: "core",
            version: "7.24.0",
            qualifiers: Vec::new(),
        };
        assert_eq!(npm.to_string(), "pkg:npm/%40babel/core@7.24.0");
        let go = Purl {
            kind: "golang",
            namespace: "github.com/docker",
            name: "docker-credential-helpers",
            version: "v0.0.0-20200101+incompatible",
            qualifiers: vec![("unused", String::new())],
        };
        assert_eq!(
            go.to_string(),
            "pkg:golang/github.com/docker/docker-credential-helpers@v0.0.0-20200101+incompatible"
        );
    }
}
