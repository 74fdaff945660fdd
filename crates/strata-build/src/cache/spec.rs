//! `--cache-from` and `--cache-to` values: where a shared cache is read
//! from and written to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use strata_oci::reference::Reference;

use crate::error::{Result, context, other};

/// Where a cache lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=REG/REPO:TAG`
    Registry(Reference),
    /// `type=local,src=DIR` / `dest=DIR`: an OCI layout folder.
    Local(PathBuf),
}

/// `--cache-to`: where, and whether intermediate stages are included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheExport {
    pub location: CacheLocation,
    /// `mode=max`: every step of every stage built; `mode=min` (default):
    /// only the steps of the stages the result image is made of.
    pub max: bool,
}

fn parse_fields(spec: &str) -> BTreeMap<String, String> {
    spec.split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn parse_ref(spec: &str, r: &str) -> Result<Reference> {
    Reference::parse(r).map_err(context(format!("{spec:?}")))
}

/// Parses `--cache-from`: `type=registry,ref=R`, `type=local,src=DIR`, or a
/// bare reference (buildx's short form).
pub fn parse_cache_from(spec: &str) -> Result<CacheLocation> {
    if !spec.contains('=') {
        return Ok(CacheLocation::Registry(parse_ref(spec, spec)?));
    }
    let f = parse_fields(spec);
    match f.get("type").map(String::as_str).unwrap_or("registry") {
        "registry" => {
            let r = f
                .get("ref")
                .ok_or_else(|| other(format!("--cache-from {spec:?}: ref= is required")))?;
            Ok(CacheLocation::Registry(parse_ref(spec, r)?))
        }
        "local" => {
            let d = f
                .get("src")
                .ok_or_else(|| other(format!("--cache-from {spec:?}: src= is required")))?;
            Ok(CacheLocation::Local(PathBuf::from(d)))
        }
        t => Err(other(format!(
            "--cache-from {spec:?}: unsupported type {t:?} (registry, local)"
        ))),
    }
}

/// Parses `--cache-to`: `type=registry,ref=R[,mode=min|max]` or
/// `type=local,dest=DIR[,mode=min|max]`.
pub fn parse_cache_to(spec: &str) -> Result<CacheExport> {
    let f = parse_fields(spec);
    let max = match f.get("mode").map(String::as_str) {
        None | Some("min") => false,
        Some("max") => true,
        Some(m) => {
            return Err(other(format!(
                "--cache-to {spec:?}: mode={m}: expected min or max"
            )));
        }
    };
    for k in f.keys() {
        if !matches!(
            k.as_str(),
            "type" | "ref" | "dest" | "mode" | "oci-mediatypes" | "image-manifest"
        ) {
            return Err(other(format!("--cache-to {spec:?}: unknown option {k:?}")));
        }
    }
    let location = match f.get("type").map(String::as_str) {
        Some("registry") => CacheLocation::Registry(parse_ref(
            spec,
            f.get("ref")
                .ok_or_else(|| other(format!("--cache-to {spec:?}: ref= is required")))?,
        )?),
        Some("local") => CacheLocation::Local(PathBuf::from(
            f.get("dest")
                .ok_or_else(|| other(format!("--cache-to {spec:?}: dest= is required")))?,
        )),
        Some(t) => {
            return Err(other(format!(
                "--cache-to {spec:?}: unsupported type {t:?} (registry, local)"
            )));
        }
        None => return Err(other(format!("--cache-to {spec:?}: type= is required"))),
    };
    Ok(CacheExport { location, max })
}
