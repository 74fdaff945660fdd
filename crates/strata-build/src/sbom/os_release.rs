//! `/etc/os-release` (os-release(5)): which distribution an image is, for
//! the `distro=` qualifier of deb and apk package URLs (syft's
//! `linux.Release`).

/// The distribution an image says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Distro {
    /// `ID`, e.g. `debian`, `alpine`.
    pub(crate) id: String,
    /// `VERSION_ID`, e.g. `12`, `3.20.3`.
    pub(crate) version_id: String,
}

impl Distro {
    /// `ID-VERSION_ID` (`debian-12`), or `ID` alone, or empty.
    pub(crate) fn qualifier(&self) -> String {
        match (self.id.is_empty(), self.version_id.is_empty()) {
            (true, _) => String::new(),
            (false, true) => self.id.clone(),
            (false, false) => format!("{}-{}", self.id, self.version_id),
        }
    }
}

/// Reads `KEY=value` lines, values optionally quoted.
pub(crate) fn parse(text: &str) -> Distro {
    let mut d = Distro::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim() {
            "ID" => d.id = v.to_owned(),
            "VERSION_ID" => d.version_id = v.to_owned(),
            _ => {}
        }
    }
    d
}

/// `v` without one pair of quotes (double or single) around it.
fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hosts_os_release() {
        // The host's own file, whatever distribution it is.
        let Ok(text) = std::fs::read_to_string("/etc/os-release") else {
            strata_testutil::skip(
                "reads_the_hosts_os_release",
                "no /etc/os-release on this host",
            );
            return;
        };
        let d = parse(&text);
        assert!(!d.id.is_empty(), "{text}");
        let d = parse("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\n");
        assert_eq!(d.qualifier(), "alpine-3.20.3");
        let d = parse("ID='debian'\nVERSION_ID=\"12\"\n");
        assert_eq!(d.qualifier(), "debian-12");
        assert_eq!(parse("ID=arch\n").qualifier(), "arch");
    }
}
