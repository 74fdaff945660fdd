//! Sources in another stage or an image (`COPY --from`, `RUN
//! --mount=from=`), read from the layers' content indexes: selecting paths
//! and hashing them for a cache key needs no unpacking. A COPY that runs
//! reads its sources straight from the layers' snapshots, through
//! [`LayeredSource`], and a `RUN --mount=from=` gets the mounted path made
//! from them ([`Solver::stage_subtree`]); only ADD materialises the whole
//! tree on disk ([`Solver::rootfs_of`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use strata_frontend::Instruction;
use strata_store::{EntryKind, IndexEntry, LayerRecord, MergedTree};

use super::layered::LayeredSource;
use super::owners;
use super::reuse::FileCopies;
use super::select::Source;
use super::tree::{TreeRules, copy_tree};
use crate::api::InternalWork;
use crate::context;
use crate::error::{Result, other};
use crate::solver::Solver;

impl Source {
    /// Whether this source is a path in a stage's tree (relative, to be
    /// joined to the materialised root) rather than a file on disk.
    pub(super) fn in_tree(&self) -> bool {
        self.path.is_relative()
    }
}

impl Solver<'_> {
    /// The layers of a stage (by name or index) or, failing that, a named
    /// context or an image.
    pub(crate) fn source_layers(&self, from: &str, ins: &Instruction) -> Result<Vec<LayerRecord>> {
        let lower = from.to_lowercase();
        let stage_state = {
            let done = self.schedule.done.lock().expect("done map");
            from.parse::<usize>()
                .ok()
                .and_then(|i| done.get(&i))
                .or_else(|| {
                    let s = self
                        .plan
                        .stages
                        .iter()
                        .find(|s| s.name.as_deref() == Some(lower.as_str()))?;
                    done.get(&s.index)
                })
                .cloned()
        };
        Ok(match stage_state {
            Some(s) => s.layers,
            None => {
                let want = self.plan.inputs.target_platform.clone();
                match self.named_context(from) {
                    Some((name, named)) => self.named_state(&name, named, ins, &want)?.layers,
                    None => self.image(from, ins, &want)?.layers,
                }
            }
        })
    }

    /// The merged content index of `from`'s layers; made once per build.
    /// Layers without a stored index get one from their tar now.
    pub(crate) fn stage_tree(&self, from: &str, ins: &Instruction) -> Result<Arc<MergedTree>> {
        if let Some(t) = self.shared.trees.lock().expect("trees").get(from) {
            return Ok(t.clone());
        }
        let layers = self.source_layers(from, ins)?;
        let started = Instant::now();
        let mut indexes = Vec::with_capacity(layers.len());
        let mut made = 0;
        for l in &layers {
            let (index, fresh) = self.store.layer_index(l)?;
            made += usize::from(fresh);
            indexes.push(index);
        }
        if made > 0 {
            self.emit_internal(InternalWork::Indexing { layers: made }, started);
        }
        let tree = Arc::new(MergedTree::merge(&indexes));
        self.shared
            .trees
            .lock()
            .expect("trees")
            .insert(from.to_owned(), tree.clone());
        Ok(tree)
    }

    /// The path `rel` (resolved) of `from`'s tree as a directory or file on
    /// disk, for a `RUN --mount=from=`: copied from the source's snapshots
    /// with their metadata, as `COPY --from` copies, files hard-linked from
    /// the snapshots when `share` (a read-only mount: nothing can write
    /// through the links). Made once per build for each path; only that
    /// path is made, never the whole tree.
    pub(crate) fn stage_subtree(
        &self,
        from: &str,
        rel: &str,
        share: bool,
        ins: &Instruction,
    ) -> Result<PathBuf> {
        let tree = self.stage_tree(from, ins)?;
        if !names_are_exact(&tree) {
            return Ok(self.rootfs_of(from, ins)?.join(rel));
        }
        let key = format!("{from}\0{rel}\0{share}");
        // Held throughout, so two steps asking at once make it once.
        let mut made = self.shared.rootfs.lock().expect("rootfs map");
        if let Some(d) = made.get(&key) {
            return Ok(d.path().join("tree"));
        }
        let layered = LayeredSource {
            tree,
            lowers: self.lowers(&self.source_layers(from, ins)?)?,
        };
        let started = Instant::now();
        let dir = self.scratch()?;
        let dst = dir.path().join("tree");
        let files = if share {
            FileCopies::counting()
        } else {
            FileCopies::copying_only()
        };
        owners::begin();
        copy_tree(
            Path::new(rel),
            &dst,
            "",
            "",
            TreeRules {
                ignore: None,
                exclude: None,
                owner: None,
                chmod: None,
                files: &files,
                source: Some(&layered),
            },
            false,
        )?;
        owners::apply_pending(dir.path())?;
        self.report_copies(&files, started);
        made.insert(key, dir);
        Ok(dst)
    }

    /// The merged root filesystem of a stage (by name or index) or an image,
    /// unpacked from its layers' tars, once per build: only for what cannot
    /// be read from the snapshots (ADD --from, trees with non-UTF-8 names).
    pub(crate) fn rootfs_of(&self, from: &str, ins: &Instruction) -> Result<PathBuf> {
        // Held throughout, so two stages asking at once materialise it once.
        let mut rootfs = self.shared.rootfs.lock().expect("rootfs map");
        if let Some(d) = rootfs.get(from) {
            return Ok(d.path().to_owned());
        }
        let layers = self.source_layers(from, ins)?;
        let started = std::time::Instant::now();
        let dir = self.scratch()?;
        for l in &layers {
            let r = self.store.open_layer_tar(l)?;
            strata_oci::apply::apply_layer(r, dir.path(), &mut strata_oci::apply::DeleteWhiteouts)
                .map_err(crate::error::context(format!("unpacking {}", l.diff_id)))?;
        }
        if !layers.is_empty() {
            self.emit_internal(
                InternalWork::Unpacking {
                    layers: layers.len(),
                },
                started,
            );
        }
        let p = dir.path().to_owned();
        rootfs.insert(from.to_owned(), dir);
        Ok(p)
    }

    /// Turns tree sources into paths under `from`'s materialised root.
    pub(super) fn materialise_sources(
        &self,
        from: &str,
        ins: &Instruction,
        sources: &mut [Source],
    ) -> Result<()> {
        if !sources.iter().any(Source::in_tree) {
            return Ok(());
        }
        let root = self.rootfs_of(from, ins)?;
        for s in sources.iter_mut().filter(|s| s.in_tree()) {
            s.path = root.join(&s.path);
        }
        Ok(())
    }
}

/// Whether every path in `tree` is held exactly: the index keeps names
/// that are not UTF-8 lossily, and such a name cannot be looked up in a
/// snapshot (the tree is then materialised from the layers' tars instead).
pub(super) fn names_are_exact(tree: &MergedTree) -> bool {
    !tree
        .entries()
        .any(|e| e.path.contains(char::REPLACEMENT_CHARACTER))
}

/// Sources matching `rel` in `tree`, by the rules of `Solver::select` (glob
/// components matched against directory entries, symlinks followed inside
/// the tree, a final name a pattern matched taken as it is). Each source's
/// path is its resolved path in the tree, relative.
pub(super) fn select_in_tree(tree: &MergedTree, rel: &str) -> Result<Vec<Source>> {
    let join = |dir: &str, name: &str| {
        if dir.is_empty() {
            name.to_owned()
        } else {
            format!("{dir}/{name}")
        }
    };
    let resolve = |p: &str, follow_last: bool| {
        tree.resolve(p, follow_last)
            .map_err(|e| other(format!("{p}: {e}")))
    };
    let mut candidates = vec![String::new()];
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if !comp.contains(['*', '?', '[']) {
            candidates = candidates.iter().map(|dir| join(dir, comp)).collect();
            continue;
        }
        let glob = globset::GlobBuilder::new(comp)
            .literal_separator(true)
            .build()
            .map_err(|e| other(format!("bad pattern {rel}: {e}")))?
            .compile_matcher();
        let mut next = Vec::new();
        for dir in &candidates {
            let d = resolve(dir, true)?;
            if !tree.get(&d).is_some_and(|e| e.kind == EntryKind::Dir) {
                continue;
            }
            next.extend(
                tree.children(&d)
                    .iter()
                    .filter(|n| glob.is_match(n.as_str()))
                    .map(|n| join(dir, n)),
            );
        }
        candidates = next;
    }
    let mut out = Vec::new();
    for r in candidates {
        // Followed, a name a pattern matched too, as from the context.
        let p = resolve(&r, true)?;
        if tree.get(&p).is_none() {
            continue;
        }
        out.push(Source {
            path: PathBuf::from(p),
            rel: r,
            keep: String::new(),
        });
    }
    Ok(out)
}

/// Whether `path` is a directory in `tree`, following symlinks.
pub(crate) fn tree_is_dir(tree: &MergedTree, path: &str) -> bool {
    tree.resolve(path, true)
        .ok()
        .and_then(|p| tree.get(&p))
        .is_some_and(|e| e.kind == EntryKind::Dir)
}

/// Hashes what is at `path` in `tree` and everything under it, for a cache
/// key: relative path, type, mode, owner, size, link target and content
/// hash of each entry, in walk order (a directory, then its entries by
/// name). Entries `exclude` matches (relative to `path`) are left out. A
/// symlink at `path` is hashed as a link and, as a directory walk follows
/// its root, with what it leads to.
pub(crate) fn hash_tree_at(
    tree: &MergedTree,
    path: &str,
    exclude: Option<&context::Ignore>,
    hasher: &mut blake3::Hasher,
) -> Result<()> {
    let Some(top) = tree.get(path) else {
        return Err(other(format!("{path}: not found in the source")));
    };
    let start = if top.kind == EntryKind::Symlink {
        hash_entry("", &top, hasher);
        let target = tree
            .resolve(path, true)
            .map_err(|e| other(format!("{path}: {e}")))?;
        match tree.get(&target) {
            Some(_) => target,
            None => return Ok(()),
        }
    } else {
        path.to_owned()
    };
    let mut stack = vec![(start, String::new())];
    while let Some((at, rel)) = stack.pop() {
        let Some(e) = tree.get(&at) else { continue };
        let excluded = !rel.is_empty() && exclude.is_some_and(|ex| ex.excluded(&rel));
        if !excluded {
            hash_entry(&rel, &e, hasher);
        }
        if e.kind == EntryKind::Dir {
            // Pushed in reverse so they pop in name order.
            for name in tree.children(&at).into_iter().rev() {
                let child_at = if at.is_empty() {
                    name.clone()
                } else {
                    format!("{at}/{name}")
                };
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((child_at, child_rel));
            }
        }
    }
    Ok(())
}

fn hash_entry(rel: &str, e: &IndexEntry, hasher: &mut blake3::Hasher) {
    hasher.update(rel.as_bytes());
    hasher.update(&[0, e.kind.tag()]);
    hasher.update(&e.mode.to_le_bytes());
    hasher.update(&e.uid.to_le_bytes());
    hasher.update(&e.gid.to_le_bytes());
    match e.kind {
        EntryKind::Symlink => {
            hasher.update(e.link.as_deref().unwrap_or_default().as_bytes());
        }
        EntryKind::File => {
            hasher.update(&e.size.to_le_bytes());
            hasher.update(e.content.as_deref().unwrap_or_default().as_bytes());
        }
        _ => {}
    }
    hasher.update(&[1]);
}
