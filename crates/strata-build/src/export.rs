//! Exporters for `strata build -o` (the `docker buildx build -o` syntax):
//! image archives and layouts here; `spec` parses `-o`, `index` holds what
//! image outputs and pushes share (attestations, the OCI index),
//! `registry` what a push sends, `rootfs` the `local` and `tar` outputs.

mod index;
mod registry;
mod rootfs;
mod spec;

use std::collections::BTreeMap;

use strata_oci::Compression;
use strata_oci::archive::{ArchiveFormat, ArchiveImage};
use strata_oci::image::Platform;
use strata_oci::image::{Descriptor, MEDIA_TYPE_OCI_INDEX, Manifest};
use strata_store::{ImageRecord, Lease, Store};

use crate::annotations::AnnotationTarget;
use crate::api::{Output, OutputKind};
use crate::error::{Result, context, other};
pub(crate) use index::{Attach, PlatformImage};
use index::{INDEX_ANNOTATIONS_SINGLE, index_document, statements_for};
pub use registry::registry_upload;
use rootfs::write_to;
pub use spec::parse_output;

/// BuildKit's refusal of several platforms in a docker-archive (its oci
/// exporter in the docker variant, `exporter/oci/export.go`), which buildx
/// prints for `--load` and `-o type=docker` alike.
pub const DOCKER_MANIFEST_LISTS: &str =
    "docker exporter does not currently support exporting manifest lists";

/// Refuses, before anything is built, outputs that cannot hold what the
/// build will produce for `platforms` (how many images it makes).
pub fn check_outputs(outputs: &[Output], platforms: usize) -> Result<()> {
    if platforms < 2 {
        return Ok(());
    }
    for o in outputs {
        if o.kind == OutputKind::Docker {
            return Err(other(format!(
                "-o type=docker: {DOCKER_MANIFEST_LISTS} (a docker-archive holds one platform's image); use -o type=oci for an index, or build one --platform"
            )));
        }
    }
    Ok(())
}

/// Writes one output. Layers compressed for it (made on demand, see
/// `Store::encode_layers`) are reported through `compressed` (how many, and
/// the seconds it took) before the output is written.
pub(crate) fn export(
    store: &Store,
    lease: &Lease,
    images: &[PlatformImage],
    out: &Output,
    attach: &Attach<'_>,
    epoch: i64,
    compressed: &mut dyn FnMut(usize, f64),
) -> Result<Option<Descriptor>> {
    let tags = attach.names;
    let Some(dest) = &out.dest else {
        return Ok(None);
    };
    if images.is_empty() {
        return Err(other("no image to export"));
    }
    match &out.kind {
        OutputKind::Image => Ok(None),
        OutputKind::Docker | OutputKind::Oci { .. } => {
            let blobs = strata_oci::blobs::BlobStore::open(store.root().join("blobs"))
                .map_err(context("opening the blob store"))?;
            let mut manifests = Vec::new();
            let started = std::time::Instant::now();
            let mut made = 0;
            for pi in images {
                let raw = store.read_blob(&pi.image.manifest)?;
                let mut manifest = Manifest::from_json(&raw)
                    .map_err(context(format!("manifest {}", pi.image.manifest)))?;
                let reencode = out.compression.map(|c| ReEncode {
                    to: c,
                    same_codec_too: out.force_compression || out.explicit_level,
                });
                made += encode_layers(store, lease, &pi.image, &mut manifest, reencode)?;
                manifests.push((manifest, pi.platform.clone()));
            }
            if made > 0 {
                compressed(made, started.elapsed().as_secs_f64());
            }
            let built: Vec<Platform> = manifests.iter().map(|(_, p)| p.clone()).collect();
            out.annotations.check_platforms(&built)?;
            for (m, p) in &mut manifests {
                m.annotations
                    .extend(out.annotations.of(AnnotationTarget::Manifest, p));
            }
            let tar = out.kind != (OutputKind::Oci { tar: false });
            let docker = out.kind == OutputKind::Docker;
            // BuildKit's oci exporter makes an index for attestations only
            // when some are not `inline-only` (buildx's default provenance
            // is), but an index it makes anyway carries them all. A
            // docker-archive (`type=docker`, `--load`) has no index:
            // `docker load` keeps the image only.
            let multi = manifests.len() > 1;
            let with_statements = !docker
                && manifests
                    .iter()
                    .any(|(m, p)| !statements_for(attach, p, &m.to_json(), multi).is_empty());
            if multi || with_statements {
                check_outputs(std::slice::from_ref(out), manifests.len())?;
                let doc = index_document(
                    manifests
                        .into_iter()
                        .map(|(m, p)| {
                            let json = m.to_json();
                            (m, json, p)
                        })
                        .collect(),
                    |p, json| statements_for(attach, p, json, multi),
                    &out.annotations,
                );
                let written = Descriptor::new(
                    MEDIA_TYPE_OCI_INDEX,
                    strata_oci::Digest::of(&doc.json),
                    doc.json.len() as u64,
                );
                if !tar {
                    strata_oci::archive::write_document_dir(dest, &blobs, &doc, tags)
                        .map_err(context(format!("writing {}", dest.display())))?;
                } else {
                    write_to(dest, |w| {
                        strata_oci::archive::write_document_archive(w, &blobs, &doc, tags)
                            .map_err(context(format!("writing {}", dest.display())))
                    })?;
                }
                return Ok(Some(written));
            }
            if out.annotations.wants_index() {
                return Err(other(INDEX_ANNOTATIONS_SINGLE));
            }
            let images: Vec<ArchiveImage> = manifests
                .into_iter()
                .map(|(manifest, platform)| ArchiveImage {
                    names: tags.to_vec(),
                    descriptor_annotations: if docker {
                        BTreeMap::new()
                    } else {
                        out.annotations
                            .of(AnnotationTarget::ManifestDescriptor, &platform)
                    },
                    manifest,
                })
                .collect();
            let format = if docker {
                ArchiveFormat::Docker
            } else {
                ArchiveFormat::Oci
            };
            if !tar {
                strata_oci::archive::write_oci_dir(dest, &blobs, &images)
                    .map_err(context(format!("writing {}", dest.display())))?;
            } else {
                write_to(dest, |w| {
                    strata_oci::archive::write_archive(w, &blobs, &images, format)
                        .map_err(context(format!("writing {}", dest.display())))
                })?;
            }
            Ok(None)
        }
        OutputKind::Local | OutputKind::Tar => {
            rootfs::export(store, images, &out.kind, dest, epoch, attach).map(|()| None)
        }
    }
}

/// An output as progress names it: `type=oci,dest=out.tar`.
pub fn describe(out: &Output) -> String {
    let kind = match out.kind {
        OutputKind::Image => "image",
        OutputKind::Docker => "docker",
        OutputKind::Oci { tar: true } => "oci",
        OutputKind::Oci { tar: false } => "oci,tar=false",
        OutputKind::Local => "local",
        OutputKind::Tar => "tar",
    };
    match &out.dest {
        Some(d) => format!("type={kind},dest={}", d.display()),
        None => format!("type={kind}"),
    }
}

/// What an export asked of the layers' encoding.
#[derive(Debug, Clone, Copy)]
struct ReEncode {
    to: Compression,
    /// Also re-encode layers already in `to`'s codec (`force-compression`,
    /// or an explicit `compression-level`, since the level a stored blob
    /// was made with is not known).
    same_codec_too: bool,
}

/// Points `manifest`'s layers at blobs encoded as shipped: a layer a build
/// stored uncompressed gets the encoding it ships in (`ship_as`), and with
/// `compression=` asked, every layer whose codec differs (or every layer,
/// with `same_codec_too`) gets the asked one; other layers stay as stored.
/// Encodings are made once (all of the image's at once, in parallel) and
/// kept in the store by diffID and encoding (`Store::encode_layers`), so a
/// repeat export only looks them up; each is checked to decompress to the
/// layer's diffID, so the config's diff_ids stay true. Returns how many
/// layers were compressed now.
fn encode_layers(
    store: &Store,
    lease: &Lease,
    image: &ImageRecord,
    manifest: &mut Manifest,
    want: Option<ReEncode>,
) -> Result<usize> {
    if manifest.layers.len() != image.layers.len() {
        return Err(other(format!(
            "image {}: its manifest lists {} layers, its record {}; run `strata check`",
            image.id,
            manifest.layers.len(),
            image.layers.len()
        )));
    }
    let docker = manifest.media_type == strata_oci::image::MEDIA_TYPE_DOCKER_MANIFEST;
    let mut wanted = Vec::new();
    let mut which = Vec::new();
    for (i, (l, rec)) in manifest.layers.iter().zip(&image.layers).enumerate() {
        // A layer kept uncompressed until shipped counts as being in the
        // codec it ships in, as it was when builds stored it so.
        let current = rec
            .ship_as
            .or_else(|| Compression::from_media_type(&l.media_type));
        // The asked codec, unless the layer is in it already and nothing
        // forces a re-encoding; else as it ships.
        let to = match want {
            Some(w) if w.same_codec_too || current.is_none_or(|c| c.name() != w.to.name()) => w.to,
            _ => match rec.ship_as {
                Some(c) => c,
                None => continue,
            },
        };
        wanted.push((rec.clone(), to));
        which.push(i);
    }
    // Compressed outside the store lock, each encoding committed into our
    // lease under it (and made once across processes, under its key lock).
    let (encs, made) = store
        .encode_layers(lease, &wanted)
        .map_err(context(format!(
            "compressing the layers of image {}",
            image.id
        )))?;
    for ((i, (_, to)), enc) in which.into_iter().zip(&wanted).zip(encs) {
        let l = &mut manifest.layers[i];
        l.digest = enc.blob;
        l.size = enc.size;
        l.media_type = if docker {
            to.docker_layer_media_type().to_owned()
        } else {
            to.oci_layer_media_type().to_owned()
        };
    }
    Ok(made)
}
