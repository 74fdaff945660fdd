//! The build context: `.dockerignore` rules and content hashing of exactly
//! the files a step selects.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use strata_store::{CtxMeta, Store};

use crate::error::{BuildError, Result};

/// `.dockerignore` rules: the frontend's matcher (moby/patternmatcher
/// semantics, see `strata_frontend::Ignore`) over the file this reads.
#[derive(Default, Clone)]
pub struct Ignore {
    rules: strata_frontend::Ignore,
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

    /// The frontend's rules, for the build checks.
    pub fn rules(&self) -> &strata_frontend::Ignore {
        &self.rules
    }

    pub fn parse(text: &str) -> Result<Self> {
        strata_frontend::Ignore::parse(text)
            .map(|rules| Self { rules })
            .map_err(|e| BuildError::Other(format!(".dockerignore: {e}")))
    }

    /// Whether `rel` (relative to the context, `/`-separated) is excluded.
    pub fn excluded(&self, rel: &str) -> bool {
        self.rules.excluded(rel)
    }

    /// Whether the excluded directory `rel` must still be walked for
    /// exceptions inside it.
    pub fn descend_excluded(&self, rel: &str) -> bool {
        self.rules.descend_excluded(rel)
    }
}

/// Content hashes of context files remembered across builds: a file whose
/// device, inode, size, mtime and ctime are unchanged since the last build is
/// not read again (git's index does the same). Only context files go through
/// it; the stat data is what a writer cannot keep unchanged (ctime).
#[derive(Default)]
pub struct HashCache {
    /// The context as the build names it, and its absolute path: keys are
    /// absolute, so `strata build .` and `strata build /abs/dir` share entries.
    given: std::path::PathBuf,
    absolute: std::path::PathBuf,
    known: HashMap<String, CtxMeta>,
    /// Hashed anew by this build, by key (a file two steps copy is read once).
    fresh: Mutex<HashMap<String, CtxMeta>>,
}

impl HashCache {
    /// The remembered entries under `context`.
    pub fn load(store: &Store, context: &Path) -> Result<Self> {
        let absolute = std::fs::canonicalize(context).map_err(|source| BuildError::Io {
            context: format!("resolving {}", context.display()),
            source,
        })?;
        let prefix = format!("{}/", absolute.display());
        Ok(Self {
            given: context.to_owned(),
            known: store.ctx_meta_prefix(&prefix)?,
            absolute,
            fresh: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, path: &Path) -> String {
        match path.strip_prefix(&self.given) {
            Ok(rel) => self.absolute.join(rel).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    /// Saves what this build hashed anew.
    pub fn save(&self, store: &Store) -> Result<()> {
        let fresh = self.fresh.lock().expect("fresh hashes");
        if !fresh.is_empty() {
            let entries: Vec<(String, CtxMeta)> =
                fresh.iter().map(|(k, m)| (k.clone(), m.clone())).collect();
            store.ctx_meta_put_batch(&entries)?;
        }
        Ok(())
    }

    /// Entries hashed anew so far (for tests and the build summary).
    pub fn fresh_count(&self) -> usize {
        self.fresh.lock().expect("fresh hashes").len()
    }

    /// The content hash of a context file this build has already hashed or
    /// found unchanged, without reading it; `None` when it is not known for
    /// the file's current stat data. COPY uses it to tell which files of the
    /// previous snapshot of its step it can reuse.
    pub fn known_hash(&self, path: &Path, meta: &std::fs::Metadata) -> Option<[u8; 32]> {
        let key = self.key(path);
        let now = stat_of(meta, String::new());
        let same = |k: &CtxMeta| {
            k.dev == now.dev
                && k.ino == now.ino
                && k.size == now.size
                && k.mtime_ns == now.mtime_ns
                && k.ctime_ns == now.ctime_ns
        };
        if let Some(k) = self.known.get(&key).filter(|k| same(k)) {
            return hex_32(&k.blake3).ok();
        }
        let fresh = self.fresh.lock().expect("fresh hashes");
        fresh
            .get(&key)
            .filter(|m| same(m))
            .and_then(|m| hex_32(&m.blake3).ok())
    }

    fn file_hash(&self, path: &Path, meta: &std::fs::Metadata) -> Result<[u8; 32]> {
        if let Some(known) = self.known_hash(path, meta) {
            return Ok(known);
        }
        let digest = hash_file(path)?;
        let stat = stat_of(meta, blake3::Hash::from(digest).to_hex().to_string());
        self.fresh
            .lock()
            .expect("fresh hashes")
            .insert(self.key(path), stat);
        Ok(digest)
    }
}

/// A context file's stat data as the hash cache compares it.
fn stat_of(meta: &std::fs::Metadata, blake3: String) -> CtxMeta {
    use std::os::unix::fs::MetadataExt;
    CtxMeta {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.len(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        blake3,
    }
}

fn hex_32(s: &str) -> std::result::Result<[u8; 32], ()> {
    blake3::Hash::from_hex(s)
        .map(|h| *h.as_bytes())
        .map_err(|_| ())
}

fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let io = |source| BuildError::Io {
        context: format!("reading {}", path.display()),
        source,
    };
    let mut h = blake3::Hasher::new();
    // Large files are memory-mapped and hashed on all cores.
    h.update_mmap_rayon(path).map_err(io)?;
    Ok(*h.finalize().as_bytes())
}

/// Hashes a source tree for a cache key: relative path, type, mode, size,
/// link target and content (blake3); never mtimes or owners of context files
/// (COPY resets them unless `--chown`). File contents are hashed in parallel;
/// with `cache`, unchanged context files are not read at all.
pub fn hash_tree(
    root: &Path,
    rel_base: &str,
    ignore: Option<&Ignore>,
    exclude: Option<&Ignore>,
    cache: Option<&HashCache>,
    hasher: &mut blake3::Hasher,
) -> Result<()> {
    use rayon::prelude::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    let mut entries = Vec::new();
    for entry in walker {
        let entry =
            entry.map_err(|e| BuildError::Other(format!("walking {}: {e}", root.display())))?;
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let rel_str = rel.to_string_lossy().into_owned();
        let ctx_rel = if rel_base.is_empty() {
            rel_str.clone()
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
        // COPY --exclude patterns are relative to the source itself.
        if let Some(ex) = exclude
            && !rel_str.is_empty()
            && ex.excluded(&rel_str)
        {
            continue;
        }
        let meta = entry
            .metadata()
            .map_err(|e| BuildError::Other(format!("{}: {e}", entry.path().display())))?;
        entries.push((rel_str, entry.into_path(), meta));
    }
    let contents: Vec<Option<[u8; 32]>> = entries
        .par_iter()
        .map(|(_, path, meta)| {
            if !meta.is_file() {
                return Ok(None);
            }
            match cache {
                Some(c) => c.file_hash(path, meta).map(Some),
                None => hash_file(path).map(Some),
            }
        })
        .collect::<Result<_>>()?;
    for ((rel_str, path, meta), content) in entries.iter().zip(contents) {
        hasher.update(rel_str.as_bytes());
        hasher.update(&[0]);
        hasher.update(&meta.permissions().mode().to_le_bytes());
        hasher.update(&meta.uid().to_le_bytes());
        hasher.update(&meta.gid().to_le_bytes());
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(path).map_err(|e| BuildError::Io {
                context: format!("reading link {}", path.display()),
                source: e,
            })?;
            hasher.update(t.as_os_str().as_encoded_bytes());
        } else if let Some(c) = content {
            hasher.update(&meta.len().to_le_bytes());
            hasher.update(&c);
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
