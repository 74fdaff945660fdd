//! Bake definitions (`docker buildx bake`): reads `docker-bake.hcl`,
//! `docker-bake.json` and compose files, evaluates variables, functions
//! and matrices, resolves groups, `inherits`, `--set` overrides and
//! `target:` links, and prints the result as buildx's `--print` JSON.
//!
//! It knows nothing of building: the CLI maps each resolved [`Target`] to
//! a `strata_build::BuildOptions`. It reads only the files it is given
//! and the environment through the lookup it is handed.
//!
//! Modules, leaves first: `error`, `entries` (the CSV-shaped values),
//! `model` (targets, groups, merge rules), `funcs` (HCL functions),
//! `hcl_file`, `json_file`, `compose` (the three file kinds), `resolve`
//! (buildx's ReadTargets), `print` (the `--print` JSON).

mod compose;
mod entries;
mod error;
mod funcs;
mod hcl_file;
mod json_file;
mod model;
mod print;
mod resolve;

use std::collections::BTreeMap;
use std::path::Path;

pub use entries::{Entry, Secret, Ssh, csv_fields, parse_bool};
pub use error::{BakeError, Result};
pub use model::{Config, Group, NullableMap, Target};
pub use resolve::Resolved;

/// The files buildx looks for when `-f` is not given, in its order:
/// compose's names, then the bake files and their overrides. Every one
/// that exists is read, and later ones override earlier ones.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

/// A definition file's name (as given, for messages and its kind) and
/// text.
#[derive(Debug, Clone)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// Reads the `-f` files (all must exist; `-` is stdin), or, when none are
/// given, whichever of [`DEFAULT_FILES`] exist in `dir`.
pub fn read_files(names: &[String], dir: &Path) -> Result<Vec<File>> {
    let read = |name: &str| -> Result<Option<File>> {
        if name == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|source| {
                BakeError::Read {
                    path: "stdin".into(),
                    source,
                }
            })?;
            return Ok(Some(File {
                name: name.to_owned(),
                text,
            }));
        }
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(File {
                name: name.to_owned(),
                text,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && names.is_empty() => Ok(None),
            Err(source) => Err(BakeError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    };
    let mut out = Vec::new();
    if names.is_empty() {
        for n in DEFAULT_FILES {
            out.extend(read(n)?);
        }
    } else {
        for n in names {
            out.extend(read(n)?);
        }
    }
    Ok(out)
}

/// What evaluation reads from outside the files.
pub struct Env<'a> {
    /// Environment variables (overrides of HCL variables, compose
    /// interpolation, `--set t.args.X` without a value).
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Every environment variable, for compose interpolation (which also
    /// reads `.env` from `dir`).
    pub vars: BTreeMap<String, String>,
    /// The directory `.env` is read from (the working directory).
    pub dir: &'a Path,
    /// The built-in variables: `BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`.
    pub builtins: BTreeMap<String, String>,
}

/// Compose's `.env` file: `KEY=VALUE` lines (optionally `export`ed and
/// quoted), which never override the process environment.
fn dot_env(dir: &Path, vars: &mut BTreeMap<String, String>) -> Result<()> {
    let path = dir.join(".env");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => return Ok(()),
        Err(source) => {
            return Err(BakeError::Read {
                path: path.display().to_string(),
                source,
            });
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        vars.entry(k.trim().to_owned())
            .or_insert_with(|| v.to_owned());
    }
    Ok(())
}

/// Parses the files into one configuration: compose files first, then
/// HCL and JSON files evaluated together (buildx's `ParseFiles`).
pub fn parse_files(files: &[File], env: &Env<'_>) -> Result<Config> {
    let mut compose_files = Vec::new();
    let mut hcl_sources = Vec::new();
    for f in files {
        let lower = f.name.to_lowercase();
        let is_compose = if lower.ends_with(".yml") || lower.ends_with(".yaml") {
            true
        } else if lower.ends_with(".json") || lower.ends_with(".hcl") {
            false
        } else {
            compose::looks_like_compose(&f.text)
        };
        if is_compose {
            compose_files.push((f.name.clone(), f.text.clone()));
        } else if lower.ends_with(".json") {
            hcl_sources.push(json_file::parse(&f.name, &f.text)?);
        } else if lower.ends_with(".hcl") {
            hcl_sources.push(hcl_file::parse(&f.name, &f.text)?);
        } else {
            match hcl_file::parse(&f.name, &f.text) {
                Ok(s) => hcl_sources.push(s),
                Err(hcl_err) => match json_file::parse(&f.name, &f.text) {
                    Ok(s) => hcl_sources.push(s),
                    Err(_) => return Err(hcl_err),
                },
            }
        }
    }
    let mut cfg = Config::default();
    if !compose_files.is_empty() {
        let mut vars = env.vars.clone();
        dot_env(env.dir, &mut vars)?;
        let c = compose::parse(&compose_files, &vars)?;
        cfg.groups.extend(c.groups);
        cfg.targets.extend(c.targets);
        cfg.dedupe();
    }
    if !hcl_sources.is_empty() {
        let c = hcl_file::evaluate(
            &hcl_sources,
            &hcl_file::Inputs {
                lookup: env.lookup,
                builtins: &env.builtins,
            },
        )?;
        cfg.groups.extend(c.groups);
        cfg.targets.extend(c.targets);
        cfg.dedupe();
    }
    Ok(cfg)
}

/// The targets to build for the command line's target names (`default`
/// when none) and `--set` values.
pub fn resolve(
    cfg: &Config,
    targets: &[String],
    sets: &[String],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved> {
    let names = if targets.is_empty() {
        vec!["default".to_owned()]
    } else {
        targets.to_vec()
    };
    let mut r = resolve::read_targets(cfg, &names, sets, lookup)?;
    // As `buildx bake`: SOURCE_DATE_EPOCH from the environment becomes a
    // build arg of every target that does not set it.
    if let Some(epoch) = lookup("SOURCE_DATE_EPOCH").filter(|v| !v.is_empty()) {
        for t in r.targets.values_mut() {
            let args = t.args.get_or_insert_with(NullableMap::new);
            args.entry("SOURCE_DATE_EPOCH".into())
                .or_insert_with(|| Some(epoch.clone()));
        }
    }
    Ok(r)
}

/// `--print`: the resolved definition as buildx's JSON.
pub fn print(r: &Resolved) -> String {
    print::print_definition(&r.groups, &r.targets)
}
