//! Image references (`[registry[:port]/]repository[:tag][@digest]`), normalised
//! exactly as Docker does (distribution/reference's `ParseNormalizedNamed`):
//!
//! - the first path component is a registry when it contains `.` or `:`, is
//!   `localhost`, or has an upper-case letter; otherwise the registry is
//!   `docker.io` (and `index.docker.io` is the same registry);
//! - on `docker.io` a one-component repository is `library/NAME`;
//! - repository components are lower-case `[a-z0-9]` runs joined by `.`, `_`,
//!   `__` or `-`s; the whole name is at most 255 characters;
//! - a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; with neither a tag nor a
//!   digest the tag is `latest`; a reference may carry both (`name:tag@sha256:…`),
//!   and then the digest is what is fetched.

use std::fmt;
use std::str::FromStr;

use crate::Digest;

/// The registry Docker Hub images live on, as references spell it.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("invalid reference format: {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, `ghcr.io`, `127.0.0.1:5000`, `localhost`.
    pub registry: String,
    /// `library/alpine`, `org/app`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises a reference as `docker pull` does. A reference
    /// with neither tag nor digest gets `latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_name_only(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".to_owned());
        }
        Ok(r)
    }

    /// Like [`Reference::parse`] but leaves a missing tag missing (for
    /// `--cache-from` style arguments and repository names).
    pub fn parse_name_only(s: &str) -> Result<Self, ReferenceError> {
        let bad = |why| ReferenceError::Invalid(s.to_owned(), why);
        if s.is_empty() {
            return Err(bad("empty"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("the digest must be sha256:<64 hex digits>"))?,
                ),
            ),
            None => (s, None),
        };
        // The tag follows the last ':' after the last '/': in
        // `localhost:5000/app` the ':' belongs to the registry.
        let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (repo, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
            None => (name, None),
        };
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad(
                "a tag is 1 to 128 of [A-Za-z0-9_.-] and does not start with '.' or '-'",
            ));
        }
        let (registry, path) = match repo.split_once('/') {
            Some((first, rest))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first, rest)
            }
            _ => (DOCKER_HUB, repo),
        };
        if !valid_registry(registry) {
            return Err(bad("bad registry host"));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_component) {
            return Err(bad(
                "repository path components are [a-z0-9] separated by '.', '_', '__' or '-'",
            ));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_owned()
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad(
                "repository name must not be longer than 255 characters",
            ));
        }
        Ok(Self {
            registry: registry.to_owned(),
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `registry/repository` (no tag or digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The host to send API requests to (`docker.io` is served by
    /// `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// pinned, else the tag.
    pub fn manifest_selector(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }

    /// The same reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        }
    }

    /// The same repository pinned to `digest` (the tag is dropped).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The short form Docker shows: `docker.io/library/app:1` → `app:1`.
    pub fn familiar(&self) -> String {
        familiar(&self.to_string())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The short form of a normalised reference string: drops `docker.io/library/`
/// or `docker.io/`.
pub fn familiar(normalized: &str) -> String {
    if let Some(rest) = normalized.strip_prefix("docker.io/library/") {
        rest.to_owned()
    } else if let Some(rest) = normalized.strip_prefix("docker.io/") {
        rest.to_owned()
    } else {
        normalized.to_owned()
    }
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_registry(host: &str) -> bool {
    // host[:port], where host is DNS labels or an IPv6 literal in brackets.
    let (h, port) = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip6, tail)) => {
                if ip6.is_empty() || !ip6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                ("x", tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match host.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let host_ok = !h.is_empty()
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    port_ok && host_ok
}

/// `[a-z0-9]+` runs separated by one `.`, one or two `_`, or any number of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // Expected values are what `docker pull`/`docker tag` normalise to
    // (distribution/reference normalize_test.go).
    #[test]
    fn official_images_get_library_and_latest() {
        assert_eq!(n("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(n("alpine:3.20"), "docker.io/library/alpine:3.20");
        assert_eq!(n("docker.io/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(
            n("index.docker.io/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(n("library/alpine"), "docker.io/library/alpine:latest");
    }

    #[test]
    fn user_repositories_and_registries() {
        assert_eq!(n("user/app"), "docker.io/user/app:latest");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000/app:1"), "localhost:5000/app:1");
        assert_eq!(n("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
        assert_eq!(n("ghcr.io/o/r:v1.2"), "ghcr.io/o/r:v1.2");
        assert_eq!(n("[::1]:5000/app"), "[::1]:5000/app:latest");
        // An upper-case first component is a host, not a repository.
        assert_eq!(n("Registry/app"), "Registry/app:latest");
    }

    #[test]
    fn digests_pin_and_may_follow_a_tag() {
        let r = Reference::parse(&format!("alpine@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_selector(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/alpine@{D}"));
        let r = Reference::parse(&format!("alpine:3@{D}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("3"));
        assert_eq!(r.manifest_selector(), D);
    }

    #[test]
    fn familiar_names_drop_the_hub_prefixes() {
        assert_eq!(
            Reference::parse("alpine").unwrap().familiar(),
            "alpine:latest"
        );
        assert_eq!(Reference::parse("u/a:1").unwrap().familiar(), "u/a:1");
        assert_eq!(
            Reference::parse("localhost:5000/a").unwrap().familiar(),
            "localhost:5000/a:latest"
        );
    }

    #[test]
    fn api_host_of_the_hub() {
        assert_eq!(
            Reference::parse("alpine").unwrap().api_host(),
            DOCKER_HUB_API
        );
        assert_eq!(Reference::parse("q.io/a").unwrap().api_host(), "q.io");
    }

    #[test]
    fn invalid_references_are_refused() {
        for bad in [
            "",
            "Alpine",
            "alpine:",
            "alpine:-x",
            "alpine@sha256:123",
            "a//b",
            "/a",
            "a/",
            "a b",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "q.io:x/a",
            "q.io/A",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("a/{}", "b".repeat(260));
        assert!(Reference::parse(&long).is_err());
        let tag = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&tag).is_err());
    }

    #[test]
    fn separators_inside_components() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1/b2.c_d"] {
            assert!(Reference::parse(ok).is_ok(), "{ok:?} should parse");
        }
    }
}
