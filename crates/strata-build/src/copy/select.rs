//! Sources of COPY/ADD: context paths and wildcards, never escaping their root.

use std::fs;
use std::path::{Path, PathBuf};

use crate::context;
use crate::error::{Result, context};
use crate::solver::Solver;

/// A selected source: where it is on disk and its path relative to the
/// source root (for ignore rules and the cache key).
pub(super) struct Source {
    pub(super) path: PathBuf,
    pub(super) rel: String,
    /// With `--parents`: the path kept under the destination.
    pub(super) keep: String,
}

impl Solver<'_> {
    /// Sources matching `rel` (any component may hold `*`, `?`, `[...]`, as
    /// BuildKit's `COPY */x.txt`) under `root`, never escaping it; matches
    /// in path order.
    pub(super) fn select(
        &self,
        root: &Path,
        rel: &str,
        ignore: Option<&context::Ignore>,
    ) -> Result<Vec<Source>> {
        let excluded = |r: &str| !r.is_empty() && ignore.is_some_and(|i| i.excluded(r));
        let join = |dir: &str, name: &str| {
            if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            }
        };
        // Candidate paths after each component; a glob component is matched
        // against the entries of each candidate directory.
        let mut candidates = vec![String::new()];
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            let mut next = Vec::new();
            if !comp.contains(['*', '?', '[']) {
                next.extend(candidates.iter().map(|dir| join(dir, comp)));
                candidates = next;
                continue;
            }
            let glob = globset::GlobBuilder::new(comp)
                .literal_separator(true)
                .build()
                .map_err(context(format!("bad pattern {rel}")))?
                .compile_matcher();
            for dir in &candidates {
                let d = strata_oci::path::secure_join(root, Path::new(dir))
                    .map_err(context(dir.clone()))?;
                let Ok(entries) = fs::read_dir(&d) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| glob.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(dir, n)));
            }
            candidates = next;
        }
        let mut out = Vec::new();
        for r in candidates {
            // Every source is followed, a name a pattern matched too
            // (BuildKit's COPY has FollowSymlinks: fsutil's copy resolves
            // each match); it keeps its own name in the destination.
            let p =
                strata_oci::path::secure_join(root, Path::new(&r)).map_err(context(r.clone()))?;
            // An excluded directory an exception may re-include from is
            // still a source (`*`, `subdir`, `!*/sub1*`: `COPY subdir`).
            let reincluded = || ignore.is_some_and(|i| i.descend_excluded(&r));
            if (excluded(&r) && !reincluded()) || fs::symlink_metadata(&p).is_err() {
                continue;
            }
            out.push(Source {
                path: p,
                rel: r,
                keep: String::new(),
            });
        }
        Ok(out)
    }
}

/// `rel` with every symlink on the way resolved as the image would, never
/// leaving its root (`..` stops at `/`, absolute targets restart from it).
/// The last component is followed only when it leads to something that
/// exists (BuildKit writes through a link to a file; a dangling link is
/// replaced).
pub(super) fn resolve_in_image(
    lowers: &[PathBuf],
    rel: &str,
) -> std::result::Result<String, String> {
    let mut pending: std::collections::VecDeque<String> = rel
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    let mut out: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "." => continue,
            ".." => {
                out.pop();
                continue;
            }
            _ => {}
        }
        out.push(c);
        let cur = out.join("/");
        let Some(found) = strata_exec::snapshot::lookup(lowers, Path::new(&cur)) else {
            continue;
        };
        if !found.meta.file_type().is_symlink() {
            continue;
        }
        let target = fs::read_link(&found.path).map_err(|e| e.to_string())?;
        let target = target.to_string_lossy().into_owned();
        let mut next = out.clone();
        next.pop();
        if target.starts_with('/') {
            next.clear();
        }
        let is_last = pending.is_empty();
        // Where the link leads, as components still to walk.
        let mut rest: std::collections::VecDeque<String> = target
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if is_last {
            // Only a link to an existing entry is followed at the end.
            let mut probe = next.clone();
            for c in &rest {
                match c.as_str() {
                    "." => {}
                    ".." => {
                        probe.pop();
                    }
                    c => probe.push(c.to_owned()),
                }
            }
            let leads_somewhere =
                strata_exec::snapshot::lookup(lowers, Path::new(&probe.join("/"))).is_some();
            if !leads_somewhere {
                continue;
            }
        }
        hops += 1;
        if hops > 40 {
            return Err("too many levels of symbolic links".into());
        }
        out = next;
        rest.extend(pending.drain(..));
        pending = rest;
    }
    Ok(out.join("/"))
}

pub(super) fn is_archive(p: &Path) -> bool {
    let Ok(f) = fs::File::open(p) else {
        return false;
    };
    let Ok((_, mut r)) = strata_oci::compress::decompress(f) else {
        return false;
    };
    let mut block = [0u8; 512];
    if std::io::Read::read_exact(&mut r, &mut block).is_err() {
        return false;
    }
    // A tar header: "ustar" magic at offset 257.
    &block[257..262] == b"ustar"
}
