//! Writing archives: the files an archive holds are planned first (small
//! JSON files in memory, blobs by digest), then written as a tar or into a
//! layout folder.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::Path;

use super::types::{
    ArchiveError, ArchiveFormat, ArchiveImage, ArchiveIndex, DockerManifestEntry, MAX_JSON,
    StoredImage, blob_path, docker_repo, io_err, split_name,
};
use crate::attestation::{IndexDocument, IndexImage};
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::image::{
    ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Index,
    MEDIA_TYPE_OCI_MANIFEST, Manifest, canonical_json,
};
use crate::io_error::IoError;

/// How much of a blob is read and written at a time when it is copied
/// into an archive or layout.
const COPY_CHUNK: usize = 1 << 20;

/// The files of an archive, in memory for the small ones and as blob
/// references for the rest.
struct Plan {
    files: BTreeMap<String, Vec<u8>>,
    blobs: BTreeSet<Digest>,
}

/// An image to write: its manifest, the exact JSON bytes of that manifest,
/// and its names.
struct Entry<'a> {
    json: Vec<u8>,
    manifest: Manifest,
    names: &'a [String],
    descriptor_annotations: BTreeMap<String, String>,
}

impl<'a> Entry<'a> {
    fn of(img: &'a ArchiveImage) -> Self {
        Entry {
            json: img.manifest.to_json(),
            manifest: img.manifest.clone(),
            names: &img.names,
            descriptor_annotations: img.descriptor_annotations.clone(),
        }
    }

    /// The manifest as stored, read back verified.
    fn stored(store: &BlobStore, img: &'a StoredImage) -> Result<Self, ArchiveError> {
        if store.size(&img.manifest)? > MAX_JSON {
            return Err(ArchiveError::TooLarge {
                what: format!("manifest {}", img.manifest),
            });
        }
        let json = store.read_verified(&img.manifest)?;
        Ok(Entry {
            manifest: Manifest::from_json(&json)?,
            json,
            names: &img.names,
            descriptor_annotations: BTreeMap::new(),
        })
    }
}

/// Adds the config and layer blobs of `m` to `blobs`, refusing any the
/// store does not have.
fn require_blobs(
    store: &BlobStore,
    m: &Manifest,
    blobs: &mut BTreeSet<Digest>,
) -> Result<(), ArchiveError> {
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !store.contains(&d.digest) {
            return Err(ArchiveError::Missing {
                what: format!("blob {}", d.digest),
            });
        }
        blobs.insert(d.digest);
    }
    Ok(())
}

/// The descriptor of a manifest whose JSON is `json`.
fn manifest_descriptor(m: &Manifest, json: &[u8]) -> Descriptor {
    let mt = if m.media_type.is_empty() {
        MEDIA_TYPE_OCI_MANIFEST
    } else {
        &m.media_type
    };
    Descriptor::new(mt, Digest::of(json), json.len() as u64)
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

fn plan(
    store: &BlobStore,
    images: &[Entry<'_>],
    format: ArchiveFormat,
) -> Result<Plan, ArchiveError> {
    let mut files = BTreeMap::new();
    let mut blobs = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let mut base = manifest_descriptor(&img.manifest, &img.json);
        base.annotations = img.descriptor_annotations.clone();
        files.insert(blob_path(&base.digest), img.json.clone());
        require_blobs(store, &img.manifest, &mut blobs)?;
        if img.names.is_empty() {
            index_entries.push(base.clone());
        }
        for name in img.names {
            let mut d = base.clone();
            let (repo, tag) = split_name(name)?;
            d.annotations
                .insert(ANNOTATION_CONTAINERD_IMAGE_NAME.into(), name.clone());
            d.annotations
                .insert(ANNOTATION_REF_NAME.into(), tag.clone());
            index_entries.push(d);
            repositories
                .entry(docker_repo(&repo))
                .or_default()
                .insert(tag, img.manifest.config.digest.hex());
        }
        docker_entries.push(DockerManifestEntry {
            config: blob_path(&img.manifest.config.digest),
            repo_tags: Some(
                img.names
                    .iter()
                    .map(|n| split_name(n).map(|(r, t)| format!("{}:{t}", docker_repo(&r))))
                    .collect::<Result<_, _>>()?,
            ),
            layers: img
                .manifest
                .layers
                .iter()
                .map(|l| blob_path(&l.digest))
                .collect(),
        });
    }
    files.insert("oci-layout".into(), OCI_LAYOUT.to_vec());
    files.insert("index.json".into(), Index::new(index_entries).to_json());
    if format == ArchiveFormat::Docker {
        files.insert("manifest.json".into(), canonical_json(&docker_entries));
        files.insert("repositories".into(), canonical_json(&repositories));
    }
    Ok(Plan { files, blobs })
}

/// Writes an OCI layout or docker-archive as a tar to `out`.
pub fn write_archive(
    out: impl Write,
    store: &BlobStore,
    images: &[ArchiveImage],
    format: ArchiveFormat,
) -> Result<(), ArchiveError> {
    let entries: Vec<Entry<'_>> = images.iter().map(Entry::of).collect();
    write_plan_tar(out, store, &plan(store, &entries, format)?)
}

/// Like [`write_archive`] for images whose manifests are in `store`: each is
/// written as stored, so the archive names it by the digest it has there.
pub fn write_stored_archive(
    out: impl Write,
    store: &BlobStore,
    images: &[StoredImage],
    format: ArchiveFormat,
) -> Result<(), ArchiveError> {
    let entries = images
        .iter()
        .map(|i| Entry::stored(store, i))
        .collect::<Result<Vec<_>, _>>()?;
    write_plan_tar(out, store, &plan(store, &entries, format)?)
}

/// Writes a multi-platform image as an OCI layout tar to `out`: `index.json`
/// names one image index (under each of `index.names`), which lists a
/// manifest per platform, as `docker buildx build --platform A,B -o
/// type=oci` writes it.
pub fn write_index_archive(
    out: impl Write,
    store: &BlobStore,
    index: &ArchiveIndex,
) -> Result<(), ArchiveError> {
    write_plan_tar(out, store, &plan_index(store, index)?)
}

/// Like [`write_index_archive`], as an OCI layout folder (see [`write_oci_dir`]).
pub fn write_oci_index_dir(
    dir: &Path,
    store: &BlobStore,
    index: &ArchiveIndex,
) -> Result<(), ArchiveError> {
    write_plan_dir(dir, store, &plan_index(store, index)?)
}

/// The files of a multi-platform OCI layout (see [`write_index_archive`]).
fn plan_index(store: &BlobStore, index: &ArchiveIndex) -> Result<Plan, ArchiveError> {
    let images: Vec<IndexImage> = index
        .manifests
        .iter()
        .map(|(m, platform)| IndexImage {
            json: m.to_json(),
            manifest: m.clone(),
            platform: platform.clone(),
            descriptor_annotations: BTreeMap::new(),
            statements: Vec::new(),
        })
        .collect();
    let doc = IndexDocument::new(&images, BTreeMap::new(), BTreeMap::new());
    plan_document(store, &doc, &index.names)
}

/// The files of an OCI layout holding `doc`: its documents, the stored
/// blobs it names, and an `index.json` listing the index under each of
/// `names` (or once, unnamed).
fn plan_document(
    store: &BlobStore,
    doc: &IndexDocument,
    names: &[String],
) -> Result<Plan, ArchiveError> {
    let mut files = BTreeMap::new();
    let mut blobs = BTreeSet::new();
    for d in &doc.store_blobs {
        if !store.contains(&d.digest) {
            return Err(ArchiveError::Missing {
                what: format!("blob {}", d.digest),
            });
        }
        blobs.insert(d.digest);
    }
    for (d, json) in doc.manifests.iter().chain(&doc.blobs) {
        files.insert(blob_path(&d.digest), json.clone());
    }
    let base = doc.descriptor();
    files.insert(blob_path(&base.digest), doc.json.clone());
    let mut top = Vec::new();
    if names.is_empty() {
        top.push(base.clone());
    }
    for name in names {
        let (_, tag) = split_name(name)?;
        let mut d = base.clone();
        d.annotations
            .insert(ANNOTATION_CONTAINERD_IMAGE_NAME.into(), name.clone());
        d.annotations.insert(ANNOTATION_REF_NAME.into(), tag);
        top.push(d);
    }
    files.insert("oci-layout".into(), OCI_LAYOUT.to_vec());
    files.insert("index.json".into(), Index::new(top).to_json());
    Ok(Plan { files, blobs })
}

/// Writes an image index with what it carries (attestations, annotations)
/// as an OCI layout tar to `out`, named by `names` in `index.json`.
pub fn write_document_archive(
    out: impl Write,
    store: &BlobStore,
    doc: &IndexDocument,
    names: &[String],
) -> Result<(), ArchiveError> {
    write_plan_tar(out, store, &plan_document(store, doc, names)?)
}

/// Like [`write_document_archive`], as an OCI layout folder.
pub fn write_document_dir(
    dir: &Path,
    store: &BlobStore,
    doc: &IndexDocument,
    names: &[String],
) -> Result<(), ArchiveError> {
    write_plan_dir(dir, store, &plan_document(store, doc, names)?)
}

/// Writes the files of `plan` as a tar: sorted names, fixed metadata.
fn write_plan_tar(out: impl Write, store: &BlobStore, plan: &Plan) -> Result<(), ArchiveError> {
    let werr = |e| ArchiveError::Io(IoError::at("writing", "the archive")(e));
    let mut b = tar::Builder::new(out);
    let mut names: BTreeMap<String, Option<Digest>> = BTreeMap::new();
    for f in plan.files.keys() {
        names.insert(f.clone(), None);
    }
    for d in &plan.blobs {
        names.insert(blob_path(d), Some(*d));
    }
    for dir in ["blobs/", "blobs/sha256/"] {
        let h = header(dir, tar::EntryType::Directory, 0, 0o755).map_err(werr)?;
        b.append(&h, io::empty()).map_err(werr)?;
    }
    for (name, blob) in &names {
        match blob {
            Some(d) => {
                let size = store.size(d)?;
                let h = header(name, tar::EntryType::Regular, size, 0o644).map_err(werr)?;
                let path = store.path(d);
                let file = std::fs::File::open(&path)
                    .map_err(|e| ArchiveError::Io(IoError::at("reading", &path)(e)))?;
                // The blob's digest is checked on a thread of its own while
                // its bytes are copied, so the copy does not wait for the
                // hash; a corrupt blob still fails the archive when its
                // entry ends, as a verifying reader would make it fail.
                std::thread::scope(|s| {
                    let check = s.spawn(|| store.verify(d));
                    // Read and written in 1 MiB pieces (std's copy from a
                    // buffered reader writes what each fill holds).
                    let mut r =
                        io::BufReader::with_capacity(COPY_CHUNK, io::Read::take(file, size));
                    let copied = b.append(&h, &mut r).map_err(werr);
                    match check.join() {
                        Ok(checked) => checked?,
                        Err(_) => {
                            let e = io::Error::other("the digest check panicked");
                            return Err(ArchiveError::Io(IoError::at("verifying", &path)(e)));
                        }
                    }
                    copied
                })?;
            }
            None => {
                let data = plan.files.get(name).map(Vec::as_slice).unwrap_or_default();
                let h = header(name, tar::EntryType::Regular, data.len() as u64, 0o644)
                    .map_err(werr)?;
                b.append(&h, data).map_err(werr)?;
            }
        }
    }
    b.into_inner().map_err(werr)?.flush().map_err(werr)?;
    Ok(())
}

fn header(name: &str, kind: tar::EntryType, size: u64, mode: u32) -> io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)?;
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    Ok(h)
}

/// Writes an OCI layout folder at `dir` (created if needed; blobs already
/// there are kept, `index.json` is replaced atomically).
pub fn write_oci_dir(
    dir: &Path,
    store: &BlobStore,
    images: &[ArchiveImage],
) -> Result<(), ArchiveError> {
    let entries: Vec<Entry<'_>> = images.iter().map(Entry::of).collect();
    write_plan_dir(dir, store, &plan(store, &entries, ArchiveFormat::Oci)?)
}

/// Writes the files of `plan` into the layout folder `dir`: blobs first,
/// `index.json` after every blob, each atomically, so a reader never sees an index
/// naming a blob that is not there yet.
fn write_plan_dir(dir: &Path, store: &BlobStore, plan: &Plan) -> Result<(), ArchiveError> {
    let target = BlobStore::open_shared(dir.join("blobs"))?;
    for d in &plan.blobs {
        if !target.contains(d) {
            let mut r = io::BufReader::with_capacity(COPY_CHUNK, store.open_verified(d)?);
            // The reader verifies the digest as it reaches the end (an
            // error before anything is committed), so the copy is not
            // hashed a second time.
            let mut w = target.writer()?.digest_given()?;
            if let Err(e) = io::copy(&mut r, &mut w) {
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData => ArchiveError::Blob(r.get_ref().take_error(e)),
                    _ => ArchiveError::Io(IoError::at("copying blob into", dir)(e)),
                });
            }
            w.commit(Some(*d))?;
        }
    }
    for (name, data) in &plan.files {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            fs_err::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        crate::atomic::atomic_write_shared(&p, data).map_err(io_err("writing", &p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{read_archive, read_archive_from};
    use crate::compress::Compression;
    use crate::image::{ImageConfig, MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, Platform};

    /// A one-layer image for `arch` in `store`.
    fn image(store: &BlobStore, arch: &str) -> (Manifest, Platform) {
        // A real layer tar (the reader checks every layer's entries).
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(arch.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "arch", arch.as_bytes()).unwrap();
        let (ld, ln) = store.put_bytes(&b.into_inner().unwrap()).unwrap();
        let mut config = ImageConfig::new("linux", arch);
        config.rootfs.diff_ids.push(ld);
        let cj = config.to_json();
        let (cd, cn) = store.put_bytes(&cj).unwrap();
        let m = Manifest::oci(
            Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cd, cn),
            vec![Descriptor::new(
                Compression::Uncompressed.oci_layer_media_type(),
                ld,
                ln,
            )],
        );
        let p = Platform {
            architecture: arch.into(),
            os: "linux".into(),
            os_version: None,
            variant: None,
        };
        (m, p)
    }

    #[test]
    fn index_archive_lists_one_manifest_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let index = ArchiveIndex {
            manifests: vec![image(&store, "amd64"), image(&store, "arm64")],
            names: vec!["example.com/app:1".into()],
        };
        let mut tar_bytes = Vec::new();
        write_index_archive(&mut tar_bytes, &store, &index).unwrap();
        let layout = dir.path().join("layout");
        write_oci_index_dir(&layout, &store, &index).unwrap();

        // index.json names one index, under the image's name.
        let top: oci_spec::image::ImageIndex =
            serde_json::from_slice(&fs_err::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(top.manifests().len(), 1);
        let entry = &top.manifests()[0];
        assert_eq!(entry.media_type().to_string(), MEDIA_TYPE_OCI_INDEX);
        let ann = entry.annotations().clone().unwrap_or_default();
        assert_eq!(ann.get(ANNOTATION_REF_NAME).map(String::as_str), Some("1"));
        // The nested index has a manifest per platform, each with its platform.
        let hex = entry.digest().digest().to_owned();
        let nested: oci_spec::image::ImageIndex =
            serde_json::from_slice(&fs_err::read(layout.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        let archs: Vec<String> = nested
            .manifests()
            .iter()
            .map(|m| m.platform().as_ref().unwrap().architecture().to_string())
            .collect();
        assert_eq!(archs, ["amd64", "arm64"]);

        // The tar holds the same files, and our reader loads both images.
        let back = BlobStore::open(dir.path().join("back")).unwrap();
        let loaded = read_archive_from(&tar_bytes[..], &back).unwrap();
        let mut loaded_archs: Vec<String> = loaded
            .iter()
            .map(|i| i.config.platform.architecture.clone())
            .collect();
        loaded_archs.sort();
        assert_eq!(loaded_archs, ["amd64", "arm64"]);
        let from_dir =
            read_archive(&layout, &BlobStore::open(dir.path().join("b2")).unwrap()).unwrap();
        assert_eq!(from_dir.len(), 2);
    }

    #[test]
    fn a_corrupt_blob_is_refused_by_both_layouts_and_leaves_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let (manifest, _) = image(&store, "amd64");
        let layer = manifest.layers[0].digest;
        std::fs::write(store.path(&layer), b"not the layer").unwrap();
        let images = [ArchiveImage {
            manifest,
            names: vec!["example.com/app:1".into()],
            descriptor_annotations: Default::default(),
        }];
        let layout = dir.path().join("layout");
        let err = write_oci_dir(&layout, &store, &images).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        assert!(!layout.join("blobs/sha256").join(layer.hex()).exists());
        assert!(!layout.join("index.json").exists());
        let mut tar_bytes = Vec::new();
        let err = write_archive(&mut tar_bytes, &store, &images, ArchiveFormat::Oci).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}
