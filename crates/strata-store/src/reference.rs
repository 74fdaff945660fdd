//! Image reference normalisation for the store's tag table: the rules are
//! `strata_oci::reference::Reference`'s (Docker's); the store keeps tags as
//! the normalised strings.

use crate::{Result, StoreError};
pub use strata_oci::reference::familiar;

/// `app` -> `docker.io/library/app:latest`; `localhost:5000/x` ->
/// `localhost:5000/x:latest`; `app@sha256:…` keeps the digest.
pub fn normalize_reference(s: &str) -> Result<String> {
    strata_oci::reference::Reference::parse(s)
        .map(|r| r.to_string())
        .map_err(|_| StoreError::InvalidReference(s.to_owned()))
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
