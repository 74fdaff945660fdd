//! Layers as path listings: the tree an image's layers make (whiteouts
//! applied), and the `A`/`C`/`D` changes `diff` prints. Image layers are
//! read from their content indexes; a container's writable layer from its
//! tar's headers. Nothing is extracted, so hostile paths never touch disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use strata_oci::path::clean_entry_name;

use crate::{EntryKind, ImageRecord, IndexItem, Result, Store, io_err};

/// What a path is in a tree, enough to tell "changed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub kind: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub link: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiffKind {
    Added,
    Changed,
    Deleted,
}

/// One line of `diff` output: `A /path`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiffLine {
    pub path: PathBuf,
    pub kind: DiffKind,
}

impl std::fmt::Display for DiffLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = match self.kind {
            DiffKind::Added => 'A',
            DiffKind::Changed => 'C',
            DiffKind::Deleted => 'D',
        };
        write!(f, "{c} /{}", self.path.display())
    }
}

enum Item {
    Entry(PathBuf, EntryInfo),
    Whiteout(PathBuf),
    Opaque(PathBuf),
}

/// A layer's entries from its content index (made from its tar once, when
/// the layer has none yet): no layer is read again to be listed.
fn layer_items(store: &Store, l: &crate::LayerRecord) -> Result<Vec<Item>> {
    let (index, _) = store.layer_index(l)?;
    Ok(index
        .items
        .into_iter()
        .map(|it| match it {
            IndexItem::Whiteout(p) => Item::Whiteout(PathBuf::from(p)),
            IndexItem::Opaque(p) => Item::Opaque(PathBuf::from(p)),
            IndexItem::Entry(e) => {
                let kind = match e.kind {
                    EntryKind::File => tar::EntryType::Regular,
                    EntryKind::Dir => tar::EntryType::Directory,
                    EntryKind::Symlink => tar::EntryType::Symlink,
                    EntryKind::HardLink => tar::EntryType::Link,
                    EntryKind::Char => tar::EntryType::Char,
                    EntryKind::Block => tar::EntryType::Block,
                    EntryKind::Fifo => tar::EntryType::Fifo,
                };
                let info = EntryInfo {
                    kind: kind.as_byte(),
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    size: e.size,
                    mtime: e.mtime,
                    link: e.link.map(PathBuf::from),
                };
                Item::Entry(PathBuf::from(e.path), info)
            }
        })
        .collect())
}

fn tar_items(path: &Path, f: impl Read + 'static) -> Result<Vec<Item>> {
    let (_, reader) = strata_oci::compress::decompress(f).map_err(io_err(path))?;
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries().map_err(io_err(path))? {
        let e = e.map_err(io_err(path))?;
        let raw = e.path().map_err(io_err(path))?.into_owned();
        // Names with `..` are skipped (no applier accepts them); so is the root.
        let Some(p) = clean_entry_name(&raw).filter(|p| !p.as_os_str().is_empty()) else {
            continue;
        };
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = p.parent().map(Path::to_path_buf).unwrap_or_default();
        if name == ".wh..wh..opq" {
            out.push(Item::Opaque(parent));
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            out.push(Item::Whiteout(parent.join(target)));
            continue;
        }
        let h = e.header();
        let info = EntryInfo {
            kind: h.entry_type().as_byte(),
            mode: h.mode().unwrap_or(0),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            size: h.size().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
            link: e.link_name().ok().flatten().map(|l| l.into_owned()),
        };
        out.push(Item::Entry(p, info));
    }
    Ok(out)
}

fn remove_under(tree: &mut BTreeMap<PathBuf, EntryInfo>, p: &Path, keep_self: bool) {
    let victims: Vec<PathBuf> = tree
        .range(p.to_path_buf()..)
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(p))
        .cloned()
        .collect();
    for v in victims {
        if !(keep_self && v == p) {
            tree.remove(&v);
        }
    }
}

fn apply(tree: &mut BTreeMap<PathBuf, EntryInfo>, items: Vec<Item>) {
    for it in items {
        match it {
            Item::Whiteout(p) => remove_under(tree, &p, false),
            Item::Opaque(p) => remove_under(tree, &p, true),
            Item::Entry(p, info) => {
                tree.insert(p, info);
            }
        }
    }
}

/// The file tree the image's layers make, whiteouts applied.
pub fn tree_of(store: &Store, img: &ImageRecord) -> Result<BTreeMap<PathBuf, EntryInfo>> {
    let mut tree = BTreeMap::new();
    for l in &img.layers {
        apply(&mut tree, layer_items(store, l)?);
    }
    Ok(tree)
}

/// Adds every ancestor of a change as `C` (as Docker prints them), sorts by
/// path and keeps one line per path.
fn finish(mut lines: BTreeMap<PathBuf, DiffKind>) -> Vec<DiffLine> {
    let paths: Vec<PathBuf> = lines.keys().cloned().collect();
    for p in paths {
        let mut a = p.parent();
        while let Some(d) = a {
            if d.as_os_str().is_empty() {
                break;
            }
            lines.entry(d.to_path_buf()).or_insert(DiffKind::Changed);
            a = d.parent();
        }
    }
    lines
        .into_iter()
        .map(|(path, kind)| DiffLine { path, kind })
        .collect()
}

/// The changes of the image's top layer relative to the layers below.
pub fn diff_top_layer(store: &Store, img: &ImageRecord) -> Result<Vec<DiffLine>> {
    let Some((top, below)) = img.layers.split_last() else {
        return Ok(Vec::new());
    };
    let mut lower = BTreeMap::new();
    for l in below {
        apply(&mut lower, layer_items(store, l)?);
    }
    Ok(diff_items(&lower, layer_items(store, top)?))
}

fn diff_items(lower: &BTreeMap<PathBuf, EntryInfo>, items: Vec<Item>) -> Vec<DiffLine> {
    let mut lines = BTreeMap::new();
    for it in items {
        match it {
            Item::Whiteout(p) => {
                lines.insert(p, DiffKind::Deleted);
            }
            Item::Opaque(p) => {
                for k in lower.keys().filter(|k| k.starts_with(&p) && **k != p) {
                    lines.entry(k.clone()).or_insert(DiffKind::Deleted);
                }
                lines.insert(p, DiffKind::Changed);
            }
            Item::Entry(p, _) => {
                let k = if lower.contains_key(&p) {
                    DiffKind::Changed
                } else {
                    DiffKind::Added
                };
                lines.insert(p, k);
            }
        }
    }
    finish(lines)
}

/// The changes that turn image `a`'s tree into image `b`'s. Directories
/// whose own metadata is unchanged appear only as parents of a change.
pub fn diff_images(store: &Store, a: &ImageRecord, b: &ImageRecord) -> Result<Vec<DiffLine>> {
    let ta = tree_of(store, a)?;
    let tb = tree_of(store, b)?;
    Ok(diff_trees(&ta, &tb))
}

pub(crate) fn diff_trees(
    ta: &BTreeMap<PathBuf, EntryInfo>,
    tb: &BTreeMap<PathBuf, EntryInfo>,
) -> Vec<DiffLine> {
    let mut lines = BTreeMap::new();
    let mut deleted_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for (p, ia) in ta {
        match tb.get(p) {
            None => {
                // Docker lists a deleted directory, not everything inside it.
                if !deleted_dirs.iter().any(|d| p.starts_with(d)) {
                    lines.insert(p.clone(), DiffKind::Deleted);
                    if ia.kind == b'5' {
                        deleted_dirs.insert(p.clone());
                    }
                }
            }
            Some(ib) if ib != ia && !(ia.kind == b'5' && ib.kind == b'5') => {
                lines.insert(p.clone(), DiffKind::Changed);
            }
            Some(_) => {}
        }
    }
    // Unlike deletions, Docker lists everything inside an added directory.
    for p in tb.keys() {
        if !ta.contains_key(p) {
            lines.insert(p.clone(), DiffKind::Added);
        }
    }
    finish(lines)
}

/// `diff CONTAINER`: the container's writable layer against its image.
pub fn diff_container(store: &Store, c: &crate::ContainerRecord) -> Result<Vec<DiffLine>> {
    let img = store
        .get_image(&c.image)?
        .ok_or_else(|| crate::StoreError::NoSuchImage(c.image.to_string()))?;
    if !c.upper.is_file() {
        return Ok(Vec::new());
    }
    let lower = tree_of(store, &img)?;
    let f = fs_err::File::open(&c.upper).map_err(io_err(&c.upper))?;
    Ok(diff_items(&lower, tar_items(&c.upper, f)?))
}
