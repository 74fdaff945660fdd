//! Image reference normalisation, kept behind two functions so that it can be
//! swapped for `strata_oci::reference::Reference` once that exists.
//! Rules (Docker's): no registry means `docker.io`; a one-part repository
//! there means `library/NAME`; no tag and no digest means `:latest`.

use crate::{Result, StoreError};

/// `app` -> `docker.io/library/app:latest`; `localhost:5000/x` ->
/// `localhost:5000/x:latest`; `app@sha256:…` keeps the digest.
pub fn normalize_reference(s: &str) -> Result<String> {
    let bad = || StoreError::InvalidReference(s.to_owned());
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    let (name, digest) = match s.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (s, None),
    };
    // A tag is after the last ':' that follows the last '/'.
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    };
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') || repo.contains("//") {
        return Err(bad());
    }
    if let Some(t) = tag
        && (t.is_empty()
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            || t.starts_with(['.', '-']))
    {
        return Err(bad());
    }
    let first = repo.split('/').next().unwrap_or(repo);
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let (domain, path) = if has_domain {
        (first, &repo[first.len() + 1..])
    } else {
        ("docker.io", repo)
    };
    if !path.split('/').all(|c| {
        !c.is_empty()
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
    }) {
        return Err(bad());
    }
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        d.parse::<strata_oci::Digest>().map_err(|_| bad())?;
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

/// The short form Docker shows: `docker.io/library/app:1` -> `app:1`.
pub fn familiar(normalized: &str) -> String {
    if let Some(rest) = normalized.strip_prefix("docker.io/library/") {
        rest.to_owned()
    } else if let Some(rest) = normalized.strip_prefix("docker.io/") {
        rest.to_owned()
    } else {
        normalized.to_owned()
    }
}

/// Splits a familiar reference into (repository, tag) for tables.
pub fn split_repo_tag(familiar: &str) -> (String, String) {
    let slash = familiar.rfind('/').map(|i| i + 1).unwrap_or(0);
    match familiar[slash..].rfind(':') {
        Some(i) => (
            familiar[..slash + i].to_owned(),
            familiar[slash + i + 1..].to_owned(),
        ),
        None => (familiar.to_owned(), "<none>".to_owned()),
    }
}
