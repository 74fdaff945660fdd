//! The build context: `.dockerignore` rules and content hashing of exactly
//! the files a step selects.

use std::path::Path;

use globset::{GlobBuilder, GlobMatcher};

use crate::{BuildError, Result};

/// `.dockerignore` rules (moby/patternmatcher semantics): patterns are
/// cleaned (leading `/` and `./` stripped), `!` re-includes, the last
/// matching rule wins, and a rule matching a directory covers what is in it.
#[derive(Default)]
pub struct Ignore {
    rules: Vec<(GlobMatcher, bool)>,
}

impl Ignore {
    /// Reads `<dockerfile>.dockerignore` beside the context if present (it
    /// wins), else `<context>/.dockerignore`.
    pub fn load(context: &Path, dockerfile_name: &str) -> Result<Self> {
        let base = Path::new(dockerfile_name)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let specific = context.join(format!("{base}.dockerignore"));
        let generic = context.join(".dockerignore");
        let path = if specific.is_file() {
            specific
        } else {
            generic
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(BuildError::Io {
                context: format!("reading {}", path.display()),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        let mut rules = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negate, pat) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            let mut pat = pat.trim_start_matches('/');
            while let Some(p) = pat.strip_prefix("./") {
                pat = p;
            }
            let pat = pat.trim_end_matches('/');
            if pat.is_empty() || pat == "." {
                continue;
            }
            let glob = GlobBuilder::new(pat)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    BuildError::Other(format!(".dockerignore: bad pattern {line:?}: {e}"))
                })?
                .compile_matcher();
            rules.push((glob, negate));
        }
        Ok(Self { rules })
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded:
    /// the path or any of its parents matching counts, last rule wins.
    pub fn excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for (glob, negate) in &self.rules {
            let mut hit = glob.is_match(rel);
            if !hit && !negate {
                // A rule matching a parent directory covers its contents.
                let mut p = rel;
                while let Some((parent, _)) = p.rsplit_once('/') {
                    if glob.is_match(parent) {
                        hit = true;
                        break;
                    }
                    p = parent;
                }
            }
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

/// Hashes a source tree for a cache key: relative path, type, mode, size,
/// link target and content (blake3); never mtimes or owners of context files
/// (COPY resets them unless `--chown`).
pub fn hash_tree(
    root: &Path,
    rel_base: &str,
    ignore: Option<&Ignore>,
    hasher: &mut blake3::Hasher,
) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry =
            entry.map_err(|e| BuildError::Other(format!("walking {}: {e}", root.display())))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let rel_str = rel.to_string_lossy();
        let ctx_rel = if rel_base.is_empty() {
            rel_str.to_string()
        } else if rel_str.is_empty() {
            rel_base.to_owned()
        } else {
            format!("{rel_base}/{rel_str}")
        };
        if let Some(ig) = ignore
            && !ctx_rel.is_empty()
            && ig.excluded(&ctx_rel)
        {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| BuildError::Other(format!("{}: {e}", entry.path().display())))?;
        hasher.update(rel_str.as_bytes());
        hasher.update(&[0]);
        hasher.update(&meta.permissions().mode().to_le_bytes());
        hasher.update(&meta.uid().to_le_bytes());
        hasher.update(&meta.gid().to_le_bytes());
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(entry.path()).map_err(|e| BuildError::Io {
                context: format!("reading link {}", entry.path().display()),
                source: e,
            })?;
            hasher.update(t.as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            hasher.update(&meta.len().to_le_bytes());
            let mut f = std::fs::File::open(entry.path()).map_err(|e| BuildError::Io {
                context: format!("reading {}", entry.path().display()),
                source: e,
            })?;
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut f, &mut h).map_err(|e| BuildError::Io {
                context: format!("reading {}", entry.path().display()),
                source: e,
            })?;
            hasher.update(h.finalize().as_bytes());
        }
        hasher.update(&[1]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_rule_wins_and_exceptions_reinclude() {
        let ig = Ignore::parse("# comment\n*.log\n!keep.log\n/build/\n./tmp\n**/*.o\n").unwrap();
        assert!(ig.excluded("a.log"));
        assert!(!ig.excluded("keep.log"));
        assert!(ig.excluded("build"));
        assert!(ig.excluded("build/x/y"));
        assert!(ig.excluded("tmp"));
        assert!(ig.excluded("src/deep/x.o"));
        assert!(!ig.excluded("src/main.c"));
    }

    #[test]
    fn exception_inside_excluded_directory() {
        let ig = Ignore::parse("docs\n!docs/README.md\n").unwrap();
        assert!(ig.excluded("docs/a.md"));
        assert!(!ig.excluded("docs/README.md"));
    }
}
