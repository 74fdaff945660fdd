//! Turning a set of [`Change`]s into a layer tar, compressed, with the diffID
//! (digest of the tar) and the blob digest (of the compressed bytes) computed
//! in the same pass: tar -> hash -> encoder -> hash -> out.
//!
//! The tar is deterministic: entries sorted by path with parents before
//! children (missing parent directories of a change are added from disk),
//! ustar headers with numeric uid/gid and empty user/group names, no
//! atime/ctime, mtimes clamped to the build epoch when one is given, PAX
//! extended headers for long names, large ids/sizes and xattrs. Hard links
//! within the layer are kept as links; devices and fifos are kept; sockets are
//! skipped (they cannot be archived meaningfully, as in Docker). Deletions are
//! `.wh.<name>` whiteouts and opaque directories get `.wh..wh..opq`, per the
//! OCI image spec.
//!
//! A change of kind [`ChangeKind::OpaqueDir`] writes the directory and its
//! marker only: the directory's new children are changes of their own.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::change::{Change, ChangeKind};
use crate::compress::{Compression, Encoder};
use crate::digest::{Digest, DigestingWriter};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("reading {} for the layer", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the layer")]
    Write(#[source] io::Error),
    #[error("change path {} is not a plain relative path", .0.display())]
    BadPath(PathBuf),
    #[error("{} is not a directory (it is a parent of a change in the layer)", .0.display())]
    ParentNotDir(PathBuf),
}

/// How a layer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerOptions {
    pub compression: Compression,
    /// Build epoch (seconds since 1970): any mtime later than it is clamped
    /// to it. None keeps mtimes as they are.
    pub epoch: Option<i64>,
    /// Compression threads; 0 = all cores. Never changes the output.
    pub threads: usize,
    /// How owners on disk become owners in the layer (rootless builds write
    /// files as host sub-IDs); `None` records them as they are.
    pub owners: Option<OwnerMap>,
}

/// Owners on disk → owners recorded: each range maps `count` IDs from
/// `host` onward to `container` onward; an ID in no range is recorded as
/// 65534, the kernel's overflow ID (what the image would see for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwnerMap {
    /// (host start, container start, count), for uids.
    pub uids: [(u32, u32, u32); 2],
    /// The same for gids.
    pub gids: [(u32, u32, u32); 2],
}

impl OwnerMap {
    fn map(ranges: &[(u32, u32, u32); 2], host: u32) -> u32 {
        ranges
            .iter()
            .find(|(h, _, n)| host >= *h && host - h < *n)
            .map_or(65534, |(h, c, _)| c + (host - h))
    }

    pub fn uid(&self, host: u32) -> u32 {
        Self::map(&self.uids, host)
    }

    pub fn gid(&self, host: u32) -> u32 {
        Self::map(&self.gids, host)
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written (goes into the manifest).
    pub digest: Digest,
    /// Size of the blob as written.
    pub size: u64,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    pub compression: Compression,
    /// OCI layer media type for `compression`.
    pub media_type: &'static str,
}

/// Writes the layer for `changes` (relative to `root`) to `out`.
pub fn write_layer(
    root: &Path,
    changes: &[Change],
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerInfo, LayerError> {
    let entries = plan(root, changes)?;
    let mut tw = TarWriter {
        out: layer_writer(out, opts)?,
        epoch: opts.epoch,
        owners: opts.owners,
        links: HashMap::new(),
    };
    for (path, kind) in &entries {
        tw.entry(root, path, *kind)?;
    }
    // End of archive: two zero blocks.
    tw.out.write_all(&[0u8; 1024]).map_err(LayerError::Write)?;
    finish_layer(tw.out, opts)
}

/// The writer a layer tar goes into: hashed (the diffID), compressed as
/// `opts` says, hashed again (the blob digest, unless uncompressed: then it
/// is the diffID, and hashing the same bytes twice would only cost time),
/// then `out`.
fn layer_writer<W: Write>(
    out: W,
    opts: &LayerOptions,
) -> Result<DigestingWriter<Encoder<BlobSide<W>>>, LayerError> {
    let blob = if opts.compression == Compression::Uncompressed {
        BlobSide::Counted { out, len: 0 }
    } else {
        BlobSide::Hashed(DigestingWriter::new(out))
    };
    let enc = opts
        .compression
        .encoder(blob, opts.threads)
        .map_err(LayerError::Write)?;
    Ok(DigestingWriter::new(enc))
}

/// The compressed side of a [`layer_writer`]: hashed for a compressed
/// layer, only counted for an uncompressed one (whose digest is its diffID).
enum BlobSide<W> {
    Hashed(DigestingWriter<W>),
    Counted { out: W, len: u64 },
}

impl<W: Write> Write for BlobSide<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlobSide::Hashed(w) => w.write(buf),
            BlobSide::Counted { out, len } => {
                let n = out.write(buf)?;
                *len += n as u64;
                Ok(n)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlobSide::Hashed(w) => w.flush(),
            BlobSide::Counted { out, .. } => out.flush(),
        }
    }
}

/// Ends the compressed stream of a [`layer_writer`] and reads both digests.
fn finish_layer<W: Write>(
    w: DigestingWriter<Encoder<BlobSide<W>>>,
    opts: &LayerOptions,
) -> Result<LayerInfo, LayerError> {
    let (enc, diff_id, uncompressed_size) = w.finish();
    let (digest, size) = match enc.finish().map_err(LayerError::Write)? {
        BlobSide::Hashed(w) => {
            let (_, digest, size) = w.finish();
            (digest, size)
        }
        BlobSide::Counted { len, .. } => (diff_id, len),
    };
    Ok(LayerInfo {
        diff_id,
        digest,
        size,
        uncompressed_size,
        compression: opts.compression,
        media_type: opts.compression.oci_layer_media_type(),
    })
}

/// Every path of the tree under `root` (not `root` itself) as an upsert: the
/// change list of a whole directory, for `import`, `COPY --link` and base
/// rootfs tars.
pub fn changes_for_tree(root: &Path) -> Result<Vec<Change>, LayerError> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let e = e.map_err(|e| LayerError::Read {
            path: e.path().map_or_else(|| root.to_owned(), Path::to_owned),
            source: e
                .into_io_error()
                .unwrap_or_else(|| io::Error::other("walk failed")),
        })?;
        let rel = e
            .path()
            .strip_prefix(root)
            .map_err(|_| LayerError::BadPath(e.path().to_owned()))?;
        out.push(Change::upsert(rel));
    }
    Ok(out)
}

/// Sorted, deduplicated entries with parent directories filled in.
fn plan(root: &Path, changes: &[Change]) -> Result<BTreeMap<PathBuf, ChangeKind>, LayerError> {
    let mut entries: BTreeMap<PathBuf, ChangeKind> = BTreeMap::new();
    let rank = |k: ChangeKind| match k {
        ChangeKind::Delete => 0,
        ChangeKind::Upsert => 1,
        ChangeKind::OpaqueDir => 2,
    };
    for c in changes {
        let clean = crate::path::clean_entry_name(&c.path)
            .ok_or_else(|| LayerError::BadPath(c.path.clone()))?;
        if clean.as_os_str().is_empty() || clean.is_absolute() {
            return Err(LayerError::BadPath(c.path.clone()));
        }
        let e = entries.entry(clean).or_insert(c.kind);
        if rank(c.kind) > rank(*e) {
            *e = c.kind;
        }
    }
    // A deletion inside a deleted directory is implied by the outer one (and
    // its parent no longer exists on disk to be archived).
    let deleted: Vec<PathBuf> = entries
        .iter()
        .filter(|(_, k)| **k == ChangeKind::Delete)
        .map(|(p, _)| p.clone())
        .collect();
    entries.retain(|p, _| !deleted.iter().any(|d| p != d && p.starts_with(d)));
    // Parents first: every parent of an entry must be a real directory in
    // root (never a symlink, so reads cannot leave root), and is added as an
    // entry when the change set lacks it.
    let mut parents = Vec::new();
    for p in entries.keys() {
        let mut a = p.parent();
        while let Some(d) = a {
            if d.as_os_str().is_empty() {
                break;
            }
            parents.push(d.to_owned());
            a = d.parent();
        }
    }
    parents.sort();
    parents.dedup();
    for d in parents {
        let full = root.join(&d);
        let m = std::fs::symlink_metadata(&full).map_err(|e| LayerError::Read {
            path: full.clone(),
            source: e,
        })?;
        if !m.is_dir() {
            return Err(LayerError::ParentNotDir(full));
        }
        entries.entry(d).or_insert(ChangeKind::Upsert);
    }
    Ok(entries)
}

struct TarWriter<W: Write> {
    out: W,
    epoch: Option<i64>,
    owners: Option<OwnerMap>,
    /// (dev, ino) of multiply-linked files already written -> their path.
    links: HashMap<(u64, u64), PathBuf>,
}

/// The ustar fields of one entry; whatever does not fit goes to PAX.
struct Hdr {
    name: String,
    link: String,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    dev: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

impl<W: Write> TarWriter<W> {
    fn clamp(&self, mtime: i64) -> u64 {
        let t = match self.epoch {
            Some(e) if mtime > e => e,
            _ => mtime,
        };
        u64::try_from(t).unwrap_or(0)
    }

    fn entry(&mut self, root: &Path, rel: &Path, kind: ChangeKind) -> Result<(), LayerError> {
        let name = path_str(rel)?;
        if kind == ChangeKind::Delete {
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => (format!("{d}/"), b),
                None => (String::new(), name.as_str()),
            };
            return self.whiteout(format!("{dir}{WHITEOUT_PREFIX}{base}"));
        }
        let full = root.join(rel);
        let read_err = |e| LayerError::Read {
            path: full.clone(),
            source: e,
        };
        let m = std::fs::symlink_metadata(&full).map_err(read_err)?;
        let ft = m.file_type();
        let mut h = Hdr {
            name: name.clone(),
            link: String::new(),
            kind: tar::EntryType::Regular,
            mode: m.mode() & 0o7777,
            uid: u64::from(self.owners.map_or(m.uid(), |o| o.uid(m.uid()))),
            gid: u64::from(self.owners.map_or(m.gid(), |o| o.gid(m.gid()))),
            size: 0,
            mtime: self.clamp(m.mtime()),
            dev: (0, 0),
            xattrs: read_xattrs(&full).map_err(read_err)?,
        };
        let mut file = None;
        if ft.is_dir() {
            h.kind = tar::EntryType::Directory;
            h.name.push('/');
        } else if ft.is_symlink() {
            h.kind = tar::EntryType::Symlink;
            let t = std::fs::read_link(&full).map_err(read_err)?;
            h.link = t
                .to_str()
                .ok_or_else(|| LayerError::BadPath(t.clone()))?
                .to_owned();
        } else if ft.is_file() {
            let first = if m.nlink() > 1 {
                match self.links.get(&(m.dev(), m.ino())) {
                    Some(p) => Some(p.clone()),
                    None => {
                        self.links.insert((m.dev(), m.ino()), rel.to_owned());
                        None
                    }
                }
            } else {
                None
            };
            if let Some(first) = first {
                h.kind = tar::EntryType::Link;
                h.link = path_str(&first)?;
            } else {
                h.size = m.len();
                file = Some(std::fs::File::open(&full).map_err(read_err)?);
            }
        } else if ft.is_char_device() || ft.is_block_device() {
            h.kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let rdev = m.rdev();
            h.dev = (
                nix::sys::stat::major(rdev) as u32,
                nix::sys::stat::minor(rdev) as u32,
            );
        } else if ft.is_fifo() {
            h.kind = tar::EntryType::Fifo;
        } else {
            // A socket: not representable in a layer.
            return Ok(());
        }
        self.header(&h).map_err(LayerError::Write)?;
        if let Some(f) = file {
            self.copy_data(f, h.size).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => LayerError::Read {
                    path: full.clone(),
                    source: e,
                },
                _ => LayerError::Write(e),
            })?;
        }
        if kind == ChangeKind::OpaqueDir && ft.is_dir() {
            self.whiteout(format!("{name}/{OPAQUE_WHITEOUT}"))?;
        }
        Ok(())
    }

    fn whiteout(&mut self, name: String) -> Result<(), LayerError> {
        let h = Hdr {
            name,
            link: String::new(),
            kind: tar::EntryType::Regular,
            mode: 0,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: u64::try_from(self.epoch.unwrap_or(0)).unwrap_or(0),
            dev: (0, 0),
            xattrs: Vec::new(),
        };
        self.header(&h).map_err(LayerError::Write)
    }

    /// Copies exactly `size` bytes (the size in the header) and pads to 512.
    /// A file that changed size while being archived is an error rather than
    /// a corrupt tar.
    fn copy_data(&mut self, f: std::fs::File, size: u64) -> io::Result<()> {
        use std::io::Read;
        let mut limited = f.take(size);
        let n = io::copy(&mut limited, &mut self.out)?;
        if n != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        let pad = (512 - (size % 512) as usize) % 512;
        self.out.write_all(&[0u8; 512][..pad])
    }

    fn header(&mut self, h: &Hdr) -> io::Result<()> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut hdr = tar::Header::new_ustar();
        hdr.set_entry_type(h.kind);
        if hdr.set_path(&h.name).is_err() || h.name.len() > 255 {
            pax.push(("path".into(), h.name.clone().into_bytes()));
            hdr.set_path(truncate(&h.name, 99))?;
        }
        if !h.link.is_empty() && (h.link.len() > 100 || hdr.set_link_name(&h.link).is_err()) {
            pax.push(("linkpath".into(), h.link.clone().into_bytes()));
            hdr.set_link_name(truncate(&h.link, 99))?;
        }
        const MAX_ID: u64 = 0o7777777;
        const MAX_SIZE: u64 = 0o77777777777;
        if h.uid > MAX_ID {
            pax.push(("uid".into(), h.uid.to_string().into_bytes()));
        }
        if h.gid > MAX_ID {
            pax.push(("gid".into(), h.gid.to_string().into_bytes()));
        }
        if h.size > MAX_SIZE {
            pax.push(("size".into(), h.size.to_string().into_bytes()));
        }
        for (k, v) in &h.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        hdr.set_mode(h.mode);
        hdr.set_uid(h.uid.min(MAX_ID));
        hdr.set_gid(h.gid.min(MAX_ID));
        hdr.set_size(h.size.min(MAX_SIZE));
        hdr.set_mtime(h.mtime.min(MAX_SIZE));
        hdr.set_device_major(h.dev.0)?;
        hdr.set_device_minor(h.dev.1)?;
        hdr.set_cksum();
        if !pax.is_empty() {
            self.pax(&h.name, &pax)?;
        }
        self.out.write_all(hdr.as_bytes())
    }

    fn pax(&mut self, name: &str, records: &[(String, Vec<u8>)]) -> io::Result<()> {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n" where len counts itself.
            let body = k.len() + v.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len = len.to_string().len() + body;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let mut hdr = tar::Header::new_ustar();
        hdr.set_entry_type(tar::EntryType::XHeader);
        let base = name.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        hdr.set_path(format!("PaxHeaders.0/{}", truncate(base, 80)))?;
        hdr.set_mode(0o644);
        hdr.set_size(data.len() as u64);
        hdr.set_mtime(0);
        hdr.set_cksum();
        self.out.write_all(hdr.as_bytes())?;
        self.out.write_all(&data)?;
        let pad = (512 - data.len() % 512) % 512;
        self.out.write_all(&[0u8; 512][..pad])
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn path_str(p: &Path) -> Result<String, LayerError> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| LayerError::BadPath(p.to_owned()))
}

/// Whether an xattr belongs in a layer: file capabilities and user/trusted
/// attributes, but not overlayfs' own bookkeeping (`trusted.overlay.*`
/// rootful, `user.overlay.*` rootless with `userxattr`) nor host security
/// labels (`security.selinux`). The applier uses the same rule, so a layer
/// cannot plant overlay metadata either.
pub fn xattr_kept(name: &str) -> bool {
    name == "security.capability"
        || (name.starts_with("user.") && !name.starts_with("user.overlay."))
        || (name.starts_with("trusted.") && !name.starts_with("trusted.overlay."))
}

/// Whether `p` has an extended attribute a layer's tar records
/// ([`xattr_kept`]). An unreadable list counts as having one, so a caller
/// deciding whether to share the file takes the careful path.
pub fn has_recorded_xattrs(p: &Path) -> bool {
    match xattr::list(p) {
        Ok(mut names) => names.any(|n| n.to_str().is_none_or(xattr_kept)),
        Err(e) => e.raw_os_error() != Some(nix::libc::ENOTSUP),
    }
}

fn read_xattrs(p: &Path) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let names = match xattr::list(p) {
        Ok(n) => n,
        // Filesystems without xattr support simply have none.
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(out),
        Err(e) => return Err(e),
    };
    for n in names {
        let Some(name) = n.to_str() else { continue };
        if !xattr_kept(name) {
            continue;
        }
        if let Some(v) = xattr::get(p, &n)? {
            out.push((name.to_owned(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// Compresses an existing uncompressed layer tar (a base rootfs tar, an
/// `import`) into `out`, computing diffID and digest in the same pass. The tar
/// is taken as is: callers wanting normalised entries apply it to a directory
/// and use [`write_layer`] with [`changes_for_tree`].
pub fn layer_from_tar(
    mut tar: impl io::Read,
    opts: &LayerOptions,
    out: impl Write,
) -> Result<LayerInfo, LayerError> {
    let mut w = layer_writer(out, opts)?;
    io::copy(&mut tar, &mut w).map_err(LayerError::Write)?;
    finish_layer(w, opts)
}

/// The whole tree under `root` as one plain tar (`-o type=tar`): the same
/// deterministic entries as a layer, uncompressed.
pub fn write_tree_tar(
    root: &Path,
    epoch: Option<i64>,
    out: impl Write,
) -> Result<LayerInfo, LayerError> {
    let changes = changes_for_tree(root)?;
    let opts = LayerOptions {
        compression: Compression::Uncompressed,
        epoch,
        threads: 1,
        owners: None,
    };
    write_layer(root, &changes, &opts, out)
}

#[cfg(test)]
mod tests {
    use super::xattr_kept;

    #[test]
    fn overlay_and_security_labels_are_not_layer_content() {
        assert!(xattr_kept("security.capability"));
        assert!(xattr_kept("user.mime_type"));
        assert!(xattr_kept("trusted.md5"));
        assert!(!xattr_kept("trusted.overlay.opaque"));
        assert!(!xattr_kept("user.overlay.opaque"));
        assert!(!xattr_kept("security.selinux"));
        assert!(!xattr_kept("system.posix_acl_access"));
    }
}

#[cfg(test)]
mod owner_map_tests {
    use super::OwnerMap;

    #[test]
    fn host_ids_map_back_through_the_ranges() {
        // Rootless as uid 1001 with subuids 100000..165535: 1001 is root,
        // 100000 is 1, and anything else the kernel would show as nobody.
        let m = OwnerMap {
            uids: [(1001, 0, 1), (100000, 1, 65536)],
            gids: [(1001, 0, 1), (100000, 1, 65536)],
        };
        assert_eq!(m.uid(1001), 0);
        assert_eq!(m.uid(100000), 1);
        assert_eq!(m.uid(101233), 1234);
        assert_eq!(m.gid(165535), 65536);
        assert_eq!(m.uid(0), 65534);
        assert_eq!(m.uid(165536), 65534);
    }
}
