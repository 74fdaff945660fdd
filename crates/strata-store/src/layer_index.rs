//! A content index per layer (`indexes/<diffID>.json`): each path's type,
//! mode, owner, size, content hash and link target, read from the layer's
//! tar once. Merged over an image's layer chain (overlay-style, whiteouts
//! applied) it answers "what is at this path and what does it hold" without
//! unpacking anything: the cache keys of `COPY --from` and
//! `RUN --mount=from=` are computed from it.
//!
//! An index is derived data: it is written atomically after its layer's
//! blob exists, rebuilt from the tar when missing or unreadable, and removed
//! by GC with the last reference to its layer.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;
use strata_oci::path::clean_entry_name;

use crate::{LayerRecord, Result, Store, StoreError, io_err};

/// Bumped whenever what an index records changes; an index of another
/// version is rebuilt from its tar.
const INDEX_VERSION: u32 = 2;

/// What a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    /// Only in a layer's own index: merged trees hold the file it names.
    HardLink,
    Char,
    Block,
    Fifo,
}

impl EntryKind {
    /// A byte per kind, for hashing.
    pub fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
            EntryKind::HardLink => b'h',
            EntryKind::Char => b'c',
            EntryKind::Block => b'b',
            EntryKind::Fifo => b'p',
        }
    }
}

/// One path of a layer, as its tar header and content say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// Relative, `/`-separated, cleaned (no leading `/`, no `.`).
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    /// blake3 of a regular file's content, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A symlink's target as written, or the path a hard link names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// The modification time the tar header gives (what `diff` compares;
    /// no cache key reads it).
    #[serde(default)]
    pub mtime: u64,
}

/// What one tar entry does to the tree below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexItem {
    Entry(IndexEntry),
    /// `.wh.NAME`: the path and everything under it are gone.
    Whiteout(String),
    /// `.wh..wh..opq`: the directory's lower contents are gone.
    Opaque(String),
}

/// One layer's index, in tar order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerIndex {
    version: u32,
    pub items: Vec<IndexItem>,
}

impl LayerIndex {
    /// Reads an uncompressed layer tar to its end, hashing every regular
    /// file's content. Nothing is written to disk.
    pub fn from_tar(tar: impl Read) -> std::io::Result<Self> {
        let mut ar = tar::Archive::new(tar);
        let mut items = Vec::new();
        for e in ar.entries()? {
            let mut e = e?;
            let raw = e.path()?.into_owned();
            // Names with `..` are refused by every applier; the root itself
            // carries nothing a path lookup needs.
            let Some(p) = clean_entry_name(&raw).filter(|p| !p.as_os_str().is_empty()) else {
                continue;
            };
            let path = p.to_string_lossy().into_owned();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let parent = p
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name == ".wh..wh..opq" {
                items.push(IndexItem::Opaque(parent));
                continue;
            }
            if let Some(target) = name.strip_prefix(".wh.") {
                items.push(IndexItem::Whiteout(join(&parent, target)));
                continue;
            }
            let h = e.header();
            let kind = match h.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
                tar::EntryType::Directory => EntryKind::Dir,
                tar::EntryType::Symlink => EntryKind::Symlink,
                tar::EntryType::Link => EntryKind::HardLink,
                tar::EntryType::Char => EntryKind::Char,
                tar::EntryType::Block => EntryKind::Block,
                tar::EntryType::Fifo => EntryKind::Fifo,
                // Extension headers are consumed by the reader; anything
                // else is not a path an applier creates.
                _ => continue,
            };
            let (mode, uid, gid) = (
                h.mode()? & 0o7777,
                h.uid().unwrap_or(0),
                h.gid().unwrap_or(0),
            );
            let link = match kind {
                EntryKind::Symlink => e
                    .link_name()?
                    .map(|l| l.as_os_str().to_string_lossy().into_owned()),
                EntryKind::HardLink => e
                    .link_name()?
                    .and_then(|l| clean_entry_name(&l))
                    .map(|l| l.to_string_lossy().into_owned()),
                _ => None,
            };
            let (size, content) = if kind == EntryKind::File {
                let mut hasher = blake3::Hasher::new();
                let size = std::io::copy(&mut e, &mut hasher)?;
                (size, Some(hasher.finalize().to_hex().to_string()))
            } else {
                (0, None)
            };
            let mtime = e.header().mtime().unwrap_or(0);
            items.push(IndexItem::Entry(IndexEntry {
                path,
                kind,
                mode,
                uid,
                gid,
                size,
                content,
                link,
                mtime,
            }));
        }
        Ok(Self {
            version: INDEX_VERSION,
            items,
        })
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// The tree a chain of layers makes, as overlayfs shows it: upper entries
/// replace lower ones, a non-directory hides a lower directory's contents,
/// whiteouts and opaque markers remove what is below them.
#[derive(Debug, Clone, Default)]
pub struct MergedTree {
    entries: BTreeMap<String, IndexEntry>,
}

impl MergedTree {
    /// Merges layer indexes, bottom-most first.
    pub fn merge<'a>(layers: impl IntoIterator<Item = &'a LayerIndex>) -> Self {
        let mut tree = Self::default();
        for l in layers {
            // A layer's markers apply to the layers below it, whatever
            // their place in its tar relative to its own entries.
            for it in &l.items {
                match it {
                    IndexItem::Whiteout(p) => tree.remove_under(p, false),
                    IndexItem::Opaque(p) => tree.remove_under(p, true),
                    IndexItem::Entry(_) => {}
                }
            }
            for it in &l.items {
                let IndexItem::Entry(e) = it else { continue };
                let mut e = e.clone();
                if e.kind == EntryKind::HardLink {
                    // On disk a hard link is the file it names.
                    let target = e.link.as_deref().and_then(|t| tree.entries.get(t));
                    match target {
                        Some(t) if t.kind == EntryKind::File => {
                            e.kind = EntryKind::File;
                            e.size = t.size;
                            e.content = t.content.clone();
                        }
                        _ => continue,
                    }
                }
                let lower_is_dir = tree
                    .entries
                    .get(&e.path)
                    .is_some_and(|l| l.kind == EntryKind::Dir);
                if !(e.kind == EntryKind::Dir && lower_is_dir) {
                    tree.remove_under(&e.path, false);
                }
                tree.entries.insert(e.path.clone(), e);
            }
        }
        tree
    }

    fn remove_under(&mut self, p: &str, keep_self: bool) {
        if !keep_self {
            self.entries.remove(p);
        }
        let prefix = format!("{p}/");
        let victims: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for v in victims {
            self.entries.remove(&v);
        }
    }

    /// The entry at `path` (cleaned, relative), not following a final
    /// symlink. A directory only implied by a deeper path (a tar that
    /// omits parents) is reported as root-owned 0755, as appliers create it.
    pub fn get(&self, path: &str) -> Option<IndexEntry> {
        if path.is_empty() {
            return Some(implied_dir(""));
        }
        if let Some(e) = self.entries.get(path) {
            return Some(e.clone());
        }
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|_| implied_dir(path))
    }

    /// Every entry of the tree, by path (what a scanner walks).
    pub fn entries(&self) -> impl Iterator<Item = &IndexEntry> {
        self.entries.values()
    }

    /// Names directly inside the directory `dir`, sorted.
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = Vec::new();
        for k in self
            .entries
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
        {
            let rest = &k[prefix.len()..];
            let name = rest.split('/').next().unwrap_or(rest);
            if !name.is_empty() && names.last().map(String::as_str) != Some(name) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// `path` with every symlink on the way resolved as if the tree were
    /// `/` (absolute targets restart at the top, `..` stops there), the
    /// final one too when `follow_last`; missing components are kept as
    /// they are. The rules of `strata_oci::path::secure_join`, on the index.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String, String> {
        let mut todo: std::collections::VecDeque<String> = components(path).collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                done.pop();
                continue;
            }
            let is_last = todo.is_empty();
            let mut candidate = done.clone();
            candidate.push(c.clone());
            let found = self.entries.get(&candidate.join("/"));
            match found {
                Some(e) if e.kind == EntryKind::Symlink && (follow_last || !is_last) => {
                    links += 1;
                    if links > 255 {
                        return Err(format!(
                            "too many levels of symbolic links resolving {path}"
                        ));
                    }
                    let target = e.link.clone().unwrap_or_default();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for (i, t) in components(&target).enumerate() {
                        todo.insert(i, t);
                    }
                }
                _ => done.push(c),
            }
        }
        Ok(done.join("/"))
    }
}

fn implied_dir(path: &str) -> IndexEntry {
    IndexEntry {
        path: path.to_owned(),
        kind: EntryKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        content: None,
        link: None,
        mtime: 0,
    }
}

/// A path's components without `/` and `.`; `..` is kept.
fn components(p: &str) -> impl Iterator<Item = String> + '_ {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
}

impl Store {
    fn index_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("indexes")
            .join(format!("{}.json", diff_id.hex()))
    }

    /// Records `index` as the index of layer `diff_id` (atomically).
    pub fn put_layer_index(&self, diff_id: &Digest, index: &LayerIndex) -> Result<()> {
        let path = self.index_path(diff_id);
        let dir = self.root.join("indexes");
        fs_err::create_dir_all(&dir).map_err(io_err(&dir))?;
        let json = serde_json::to_vec(index).map_err(|source| StoreError::Record {
            table: "indexes",
            key: diff_id.to_string(),
            source,
        })?;
        strata_oci::atomic::atomic_write(&path, &json).map_err(io_err(&path))
    }

    /// The stored index of layer `diff_id`, if there is a readable one.
    pub fn stored_layer_index(&self, diff_id: &Digest) -> Option<LayerIndex> {
        let raw = std::fs::read(self.index_path(diff_id)).ok()?;
        serde_json::from_slice::<LayerIndex>(&raw)
            .ok()
            .filter(|i| i.version == INDEX_VERSION)
    }

    /// The index of layer `l`: the stored one, else made from its tar now
    /// (read once, nothing unpacked) and stored, once across processes (the
    /// caller holds `l` in a lease). The bool says whether it was made now.
    pub fn layer_index(&self, l: &LayerRecord) -> Result<(LayerIndex, bool)> {
        if let Some(i) = self.stored_layer_index(&l.diff_id) {
            return Ok((i, false));
        }
        let _indexing = self.key_lock(crate::KeyKind::Index, &l.diff_id)?;
        if let Some(i) = self.stored_layer_index(&l.diff_id) {
            // Another process made it while we waited.
            return Ok((i, false));
        }
        let blob = self.blob_path(&l.blob);
        let index = LayerIndex::from_tar(self.open_layer_tar(l)?).map_err(io_err(&blob))?;
        self.put_layer_index(&l.diff_id, &index)?;
        Ok((index, true))
    }

    /// Index files whose layer nothing refers to (for GC).
    pub(crate) fn remove_dead_indexes(
        &self,
        live_layers: &std::collections::BTreeSet<Digest>,
    ) -> Result<usize> {
        let dir = self.root.join("indexes");
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut removed = 0;
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let live = name
                .strip_suffix(".json")
                .and_then(|h| Digest::from_hex(h).ok())
                .is_some_and(|d| live_layers.contains(&d));
            if !live {
                let p = e.path();
                fs_err::remove_file(&p).map_err(io_err(&p))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn merge_applies_whiteouts_opaque_dirs_and_replacements() {
        use tar::EntryType::*;
        let lower = LayerIndex::from_tar(
            &tar_of(&[
                ("a/", Directory, b"", None),
                ("a/x", Regular, b"x", None),
                ("a/y", Regular, b"y", None),
                ("d/", Directory, b"", None),
                ("d/old", Regular, b"o", None),
                ("f/", Directory, b"", None),
                ("f/in", Regular, b"i", None),
            ])[..],
        )
        .unwrap();
        let upper = LayerIndex::from_tar(
            &tar_of(&[
                ("d/", Directory, b"", None),
                ("d/new", Regular, b"n", None),
                ("d/.wh..wh..opq", Regular, b"", None),
                ("a/.wh.x", Regular, b"", None),
                ("f", Regular, b"file now", None),
                ("h", Link, b"", Some("d/new")),
                ("l", Symlink, b"", Some("/a")),
            ])[..],
        )
        .unwrap();
        let t = MergedTree::merge([&lower, &upper]);
        assert!(t.get("a/x").is_none());
        assert!(t.get("a/y").is_some());
        assert_eq!(t.children("d"), vec!["new".to_owned()]);
        assert!(t.get("f/in").is_none());
        assert_eq!(t.get("f").map(|e| e.size), Some(8));
        let h = t.get("h").unwrap();
        assert_eq!(h.kind, EntryKind::File);
        assert_eq!(h.content, t.get("d/new").unwrap().content);
        assert_eq!(t.resolve("l/y", true).unwrap(), "a/y");
        assert_eq!(t.resolve("l", false).unwrap(), "l");
        assert_eq!(t.resolve("../../l/../d", true).unwrap(), "d");
        assert_eq!(t.children(""), vec!["a", "d", "f", "h", "l"]);
    }

    #[test]
    fn a_stored_index_round_trips_and_gc_drops_dead_ones() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(d.path()).unwrap();
        let idx =
            LayerIndex::from_tar(&tar_of(&[("x", tar::EntryType::Regular, b"data", None)])[..])
                .unwrap();
        let id = Digest::of(b"layer");
        store.put_layer_index(&id, &idx).unwrap();
        assert_eq!(store.stored_layer_index(&id), Some(idx));
        assert_eq!(
            store
                .remove_dead_indexes(&[id].into_iter().collect())
                .unwrap(),
            0
        );
        assert_eq!(store.remove_dead_indexes(&Default::default()).unwrap(), 1);
        assert!(store.stored_layer_index(&id).is_none());
    }
}
