//! SBOMs of images, found by reading the image's files the way syft (the
//! scanner BuildKit runs for `--sbom`, `docker/buildkit-syft-scanner`)
//! does, and written as SPDX 2.3 JSON. One file per format: `dpkg`,
//! `apk`, `python`, `npm`, `go` and `cargo` read package metadata,
//! `os_release` the distribution, `elf` the binaries' sections, `purl`
//! the package URLs, `spdx` the document.
//!
//! Nothing is unpacked: the merged content index of the image's layers
//! (whiteouts applied, `strata_store::MergedTree`) says which paths to
//! read and which layer holds each, and each such layer's tar is read once,
//! taking only those files' bytes.

mod apk;
mod cargo;
mod dpkg;
mod elf;
mod go;
mod npm;
mod os_release;
mod purl;
mod python;
pub(crate) mod spdx;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use sha2::Digest as _;
use strata_oci::Digest;
use strata_store::{EntryKind, IndexEntry, IndexItem, LayerRecord, Store};

use crate::error::{Result, context, other};

/// A package found in an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) purl: String,
    /// The licence its metadata states, if any.
    pub(crate) license: Option<String>,
    /// Which kind of package (part of its SPDX ID): `deb`, `apk`,
    /// `python`, `npm`, `go-module`, `rust-crate`.
    pub(crate) kind: &'static str,
    /// The file it was found in, absolute.
    pub(crate) found_in: String,
    /// syft's words for where the information came from.
    pub(crate) source_info: &'static str,
}

/// A file packages were found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRecord {
    /// Absolute path in the image.
    pub(crate) path: String,
    /// sha256 of its content, hex.
    pub(crate) sha256: String,
    /// The diffID of the layer it comes from.
    pub(crate) layer: Digest,
}

/// What a scan found: packages sorted by purl and file, files by path.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) packages: Vec<Package>,
    pub(crate) files: Vec<FileRecord>,
}

/// Why a path is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    OsRelease,
    Dpkg,
    Apk,
    Python,
    Npm,
    /// A file with an execute bit: maybe a Go or `cargo auditable` binary.
    Executable,
}

/// Larger files are not read: no metadata file is this big, and a binary
/// this big is held in memory while it is looked at.
const MAX_READ: u64 = 1 << 30;

fn source_of(e: &IndexEntry) -> Option<Source> {
    if e.kind != EntryKind::File {
        return None;
    }
    let p = e.path.as_str();
    // syft's globs (`**/var/lib/dpkg/status`, `**/lib/apk/db/installed`)
    // match at any depth: with /lib a symlink to usr/lib, apk's database
    // is stored under usr/lib.
    let at_any_depth = |tail: &str| p == tail || p.ends_with(&format!("/{tail}"));
    if at_any_depth("var/lib/dpkg/status") {
        return Some(Source::Dpkg);
    }
    if let Some((before, name)) = p.rsplit_once("var/lib/dpkg/status.d/") {
        // distroless keeps `NAME` and `NAME.md5sums` side by side.
        let rooted = before.is_empty() || before.ends_with('/');
        return (rooted && !name.contains('/') && !name.ends_with(".md5sums"))
            .then_some(Source::Dpkg);
    }
    if at_any_depth("lib/apk/db/installed") {
        return Some(Source::Apk);
    }
    if python::is_metadata(p) {
        return Some(Source::Python);
    }
    if npm::is_manifest(p) {
        return Some(Source::Npm);
    }
    (e.mode & 0o111 != 0 && e.size >= 64 && e.size <= MAX_READ).then_some(Source::Executable)
}

/// One layer's wanted files: name in its tar → the image paths (and why)
/// its bytes are read for (several when hard links share them).
type Wanted<'a> = HashMap<String, Vec<(&'a str, Source)>>;

/// Scans the image whose layers are `layers` (bottom first).
pub(crate) fn scan(store: &Store, layers: &[LayerRecord]) -> Result<Scan> {
    let mut indexes = Vec::with_capacity(layers.len());
    for l in layers {
        indexes.push(store.layer_index(l)?.0);
    }
    let tree = strata_store::MergedTree::merge(&indexes);
    let mut wanted: BTreeMap<String, Source> = tree
        .entries()
        .filter_map(|e| source_of(e).map(|s| (e.path.clone(), s)))
        .collect();
    for candidate in ["etc/os-release", "usr/lib/os-release"] {
        let Ok(real) = tree.resolve(candidate, true) else {
            continue;
        };
        if tree.get(&real).is_some_and(|e| e.kind == EntryKind::File) {
            wanted.insert(real, Source::OsRelease);
            break;
        }
    }
    // Which layer holds each wanted path (the topmost that has it), and
    // under which name its bytes are in that layer's tar (a hard link's
    // are under the name it links to).
    let mut provider: HashMap<&str, (usize, String)> = HashMap::new();
    for (i, index) in indexes.iter().enumerate() {
        for item in &index.items {
            let IndexItem::Entry(e) = item else { continue };
            let Some((path, _)) = wanted.get_key_value(&e.path) else {
                continue;
            };
            let in_tar = match (e.kind, &e.link) {
                (EntryKind::HardLink, Some(target)) => target.clone(),
                _ => e.path.clone(),
            };
            provider.insert(path.as_str(), (i, in_tar));
        }
    }
    let mut by_layer: BTreeMap<usize, Wanted<'_>> = BTreeMap::new();
    for (path, source) in &wanted {
        if let Some((i, in_tar)) = provider.get(path.as_str()) {
            by_layer
                .entry(*i)
                .or_default()
                .entry(in_tar.clone())
                .or_default()
                .push((path.as_str(), *source));
        }
    }
    let mut found = Found::default();
    for (i, want) in by_layer {
        let layer = &layers[i];
        let where_ = || format!("reading layer {} for the SBOM", layer.diff_id);
        let mut ar = tar::Archive::new(store.open_layer_tar(layer)?);
        for entry in ar.entries().map_err(context(where_()))? {
            let mut entry = entry.map_err(context(where_()))?;
            let raw = entry.path().map_err(context(where_()))?.into_owned();
            let Some(clean) = strata_oci::path::clean_entry_name(&raw) else {
                continue;
            };
            let Some(users) = want.get(clean.to_string_lossy().as_ref()) else {
                continue;
            };
            if !matches!(
                entry.header().entry_type(),
                tar::EntryType::Regular | tar::EntryType::Continuous
            ) {
                continue;
            }
            let Some(bytes) = read_entry(&mut entry, users).map_err(context(where_()))? else {
                continue;
            };
            for (path, source) in users {
                found.take(path, *source, &bytes, &layer.diff_id);
            }
        }
    }
    Ok(found.finish())
}

/// An entry's bytes, or `None` when every path it serves is an
/// executable and it is no ELF file (read no further than its magic).
fn read_entry(entry: &mut impl Read, users: &[(&str, Source)]) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    if users.iter().all(|(_, s)| *s == Source::Executable) {
        entry.take(4).read_to_end(&mut bytes)?;
        if bytes != b"\x7fELF" {
            return Ok(None);
        }
    }
    entry.take(MAX_READ).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

/// What has been read so far; package databases wait for the
/// distribution's name (os-release may come from a later layer).
#[derive(Default)]
struct Found {
    distro: os_release::Distro,
    databases: Vec<(String, Source, String)>,
    packages: Vec<Package>,
    files: Vec<FileRecord>,
}

impl Found {
    fn take(&mut self, path: &str, source: Source, bytes: &[u8], layer: &Digest) {
        let abs = format!("/{path}");
        let text = || String::from_utf8_lossy(bytes).into_owned();
        let before = self.packages.len();
        match source {
            Source::OsRelease => {
                self.distro = os_release::parse(&text());
                return;
            }
            Source::Dpkg | Source::Apk => self.databases.push((abs.clone(), source, text())),
            Source::Python => self.packages.extend(python::package(&text(), &abs)),
            Source::Npm => self.packages.extend(npm::package(bytes, &abs)),
            Source::Executable => {
                self.packages.extend(go::packages(bytes, &abs));
                self.packages.extend(cargo::packages(bytes, &abs));
            }
        }
        let is_database = matches!(source, Source::Dpkg | Source::Apk);
        if is_database || self.packages.len() > before {
            self.files.push(FileRecord {
                path: abs,
                sha256: format!("{:x}", sha2::Sha256::digest(bytes)),
                layer: *layer,
            });
        }
    }

    fn finish(mut self) -> Scan {
        for (path, source, text) in &self.databases {
            let found = match source {
                Source::Dpkg => dpkg::packages(text, path, &self.distro),
                _ => apk::packages(text, path, &self.distro),
            };
            self.packages.extend(found);
        }
        self.packages
            .sort_by(|a, b| (&a.purl, &a.found_in, &a.name).cmp(&(&b.purl, &b.found_in, &b.name)));
        self.packages
            .dedup_by(|a, b| a.purl == b.purl && a.found_in == b.found_in);
        self.files.sort_by(|a, b| a.path.cmp(&b.path));
        Scan {
            packages: self.packages,
            files: self.files,
        }
    }
}

/// An image's (or a stage's) SBOM as an SPDX document.
pub(crate) fn document(
    store: &Store,
    layers: &[LayerRecord],
    info: &spdx::DocumentInfo<'_>,
) -> Result<Vec<u8>> {
    let scan = scan(store, layers)?;
    spdx::document(&scan, info).map_err(other)
}

/// One platform's SBOMs: the image's, named `sbom`, then each of
/// `stages`' (`scan-stage=true`), named `sbom-STAGE`, dated `created`
/// (seconds since the epoch).
pub(crate) fn platform_sbom(
    store: &Store,
    image: &strata_store::ImageRecord,
    stages: &[(String, Vec<LayerRecord>)],
    platform: &strata_oci::Platform,
    created: i64,
) -> Result<crate::api::PlatformSbom> {
    let created = strata_oci::image::rfc3339(created).map_err(|e| other(format!("SBOM: {e}")))?;
    let mut documents = vec![(
        "sbom".to_owned(),
        document(
            store,
            &image.layers,
            &spdx::DocumentInfo {
                name: "sbom",
                subject: &image.id,
                created: &created,
            },
        )?,
    )];
    for (stage, layers) in stages {
        let name = format!("sbom-{stage}");
        // A stage has no image ID: its layer chain names it.
        let chain: Vec<u8> = layers
            .iter()
            .flat_map(|l| l.diff_id.to_string().into_bytes())
            .collect();
        let subject = Digest::of(&chain);
        let json = document(
            store,
            layers,
            &spdx::DocumentInfo {
                name: &name,
                subject: &subject,
                created: &created,
            },
        )?;
        documents.push((name, json));
    }
    Ok(crate::api::PlatformSbom {
        platform: platform.clone(),
        documents,
    })
}

/// The SBOM statements about an image manifest of `platform` whose
/// subjects are `subjects`, the image's first (`buildx imagetools` reads
/// the first as the image's, the others as `AdditionalSPDXs`).
pub(crate) fn statements(
    sboms: &[crate::api::PlatformSbom],
    platform: &strata_oci::Platform,
    subjects: &[strata_oci::attestation::Subject],
) -> Vec<strata_oci::attestation::StatementBlob> {
    use crate::api::PREDICATE_SPDX;
    sboms
        .iter()
        .filter(|s| s.platform == *platform)
        .flat_map(|s| &s.documents)
        .map(|(_, json)| strata_oci::attestation::StatementBlob {
            predicate_type: PREDICATE_SPDX.to_owned(),
            json: strata_oci::attestation::statement(PREDICATE_SPDX, subjects, json),
        })
        .collect()
}

/// The SBOM files a `local`/`tar` output of `platform` gets: (file name,
/// predicate type, SPDX JSON), named as BuildKit's local exporter names
/// them after the scanner's documents (`sbom.spdx.json`,
/// `sbom-STAGE.spdx.json`).
pub(crate) fn files<'a>(
    sboms: &'a [crate::api::PlatformSbom],
    platform: &strata_oci::Platform,
) -> Vec<(String, &'static str, &'a [u8])> {
    sboms
        .iter()
        .filter(|s| s.platform == *platform)
        .flat_map(|s| &s.documents)
        .map(|(name, json)| {
            (
                format!("{name}.spdx.json"),
                crate::api::PREDICATE_SPDX,
                json.as_slice(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, mode: u32) -> IndexEntry {
        IndexEntry {
            path: path.to_owned(),
            kind: EntryKind::File,
            mode,
            uid: 0,
            gid: 0,
            size: 1000,
            content: None,
            link: None,
            mtime: 0,
        }
    }

    #[test]
    fn paths_are_chosen_as_syft_globs_them() {
        let src = |p: &str| source_of(&file(p, 0o644));
        assert_eq!(src("var/lib/dpkg/status"), Some(Source::Dpkg));
        assert_eq!(src("var/lib/dpkg/status.d/libc6"), Some(Source::Dpkg));
        assert_eq!(src("var/lib/dpkg/status.d/libc6.md5sums"), None);
        assert_eq!(src("var/lib/dpkg/status-old"), None);
        assert_eq!(src("usr/lib/apk/db/installed"), Some(Source::Apk));
        assert_eq!(src("lib/apk/db/installed"), Some(Source::Apk));
        assert_eq!(src("usr/xlib/apk/db/installed"), None);
        assert_eq!(
            src("usr/lib/python3/dist-packages/six-1.16.0.dist-info/METADATA"),
            Some(Source::Python)
        );
        assert_eq!(src("app/node_modules/a/package.json"), Some(Source::Npm));
        assert_eq!(src("usr/bin/ls"), None);
        assert_eq!(
            source_of(&file("usr/bin/ls", 0o755)),
            Some(Source::Executable)
        );
    }
}
