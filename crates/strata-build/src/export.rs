//! Exporters for `strata build -o` (the `docker buildx build -o` syntax).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use strata_oci::Compression;
use strata_oci::archive::{ArchiveFormat, ArchiveImage};
use strata_oci::attestation::{
    IndexDocument, IndexImage, StatementBlob, image_subjects, statement,
};
use strata_oci::image::{Manifest, Platform};
use strata_store::{ImageRecord, Lease, Store};

use crate::annotations::{AnnotationTarget, Annotations, parse_annotation_option};
use crate::api::{Output, OutputKind, PlatformProvenance};
use crate::error::{BuildError, Result, context, io, other};

/// Parses `type=docker,dest=app.tar` (or the shorthand `PATH`, which means
/// `type=local,dest=PATH`, and `-`, a tar to stdout), as buildx does.
pub fn parse_output(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output {
                kind: OutputKind::Tar,
                dest: Some(PathBuf::from("-")),
                compression: None,
                force_compression: false,
                explicit_level: false,
                annotations: Annotations::default(),
            }
        } else {
            Output {
                kind: OutputKind::Local,
                dest: Some(PathBuf::from(spec)),
                compression: None,
                force_compression: false,
                explicit_level: false,
                annotations: Annotations::default(),
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut compression: Option<strata_oci::Compression> = None;
    let mut level: Option<i64> = None;
    let mut force_compression = false;
    let mut annotations = Vec::new();
    for part in spec.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            other(format!(
                "--output {spec:?}: expected key=value, got {part:?}"
            ))
        })?;
        match k {
            "type" => kind = Some(v.to_owned()),
            "dest" => dest = Some(PathBuf::from(v)),
            "tar" => tar = v != "false",
            "compression" => {
                compression = Some(
                    v.parse()
                        .map_err(|e| other(format!("--output {spec:?}: {e}")))?,
                );
            }
            "compression-level" => {
                level = Some(v.parse().map_err(|_| {
                    other(format!(
                        "--output {spec:?}: compression-level={v} is not a number"
                    ))
                })?);
            }
            "force-compression" => {
                force_compression = match v {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(other(format!(
                            "--output {spec:?}: force-compression={v}: expected true or false"
                        )));
                    }
                }
            }
            "name" | "oci-mediatypes" | "rewrite-timestamp" => {}
            other_key => match parse_annotation_option(other_key, v)
                .map_err(|e| other(format!("--output {spec:?}: {e}")))?
            {
                Some(a) => annotations.push(a),
                None => return Err(other(format!("--output: unknown attribute {other_key:?}"))),
            },
        }
    }
    let kind = match kind.as_deref() {
        Some("image") => OutputKind::Image,
        Some("docker") => OutputKind::Docker,
        Some("oci") => OutputKind::Oci { tar },
        Some("local") => OutputKind::Local,
        Some("tar") => OutputKind::Tar,
        Some(t) => {
            return Err(other(format!(
                "--output: unknown type {t:?} (image, docker, oci, local, tar)"
            )));
        }
        None => return Err(other(format!("--output {spec:?}: missing type="))),
    };
    if !annotations.is_empty() && matches!(kind, OutputKind::Local | OutputKind::Tar) {
        // BuildKit's local and tar exporters write no manifest to hold them.
        return Err(other(format!(
            "--output {spec:?}: annotations need an image output (type=image, registry, oci or docker)"
        )));
    }
    if kind != OutputKind::Image && dest.is_none() {
        return Err(other(format!(
            "--output {spec:?}: dest= is required for this type"
        )));
    }
    if let Some(l) = level {
        let c = compression.unwrap_or_default();
        compression = Some(
            c.with_level(l)
                .map_err(|e| other(format!("--output {spec:?}: {e}")))?,
        );
    }
    if kind == OutputKind::Docker
        && matches!(compression, Some(strata_oci::Compression::Zstd { .. }))
    {
        // docker-archive has no media types: `docker load` sniffs each
        // layer, and dockerd before 23.0 cannot decompress zstd.
        return Err(other(format!(
            "--output {spec:?}: type=docker cannot carry zstd layers (docker load before Docker 23 cannot read them); use type=oci for zstd"
        )));
    }
    Ok(Output {
        kind,
        dest,
        compression,
        force_compression,
        explicit_level: level.is_some(),
        annotations: Annotations(annotations),
    })
}

/// One platform's image of a build, as the exporters receive it.
#[derive(Debug, Clone)]
pub(crate) struct PlatformImage {
    pub image: ImageRecord,
    pub platform: Platform,
}

/// Refuses, before anything is built, outputs that cannot hold what the
/// build will produce for `platforms` (how many images it makes).
pub fn check_outputs(outputs: &[Output], platforms: usize) -> Result<()> {
    if platforms < 2 {
        return Ok(());
    }
    for o in outputs {
        match o.kind {
            OutputKind::Docker => {
                return Err(other(
                    "-o type=docker cannot hold a multi-platform image (a docker-archive has no index, and docker load takes one platform); use -o type=oci, or build one --platform",
                ));
            }
            OutputKind::Tar => {
                return Err(other(
                    "-o type=tar with several platforms is not supported; use -o type=local (one folder per platform) or -o type=oci",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What an image output carries beside the images.
pub(crate) struct Attach<'a> {
    /// Each platform's provenance (empty: none asked for).
    pub(crate) provenance: &'a [PlatformProvenance],
    /// Each platform's SBOMs (empty: none asked for).
    pub(crate) sbom: &'a [crate::api::PlatformSbom],
    /// The image's names (`-t`): in the layout's `index.json`, and the
    /// statements' subjects.
    pub(crate) names: &'a [String],
}

/// The statements to attach to `manifest` (platform `platform`): its
/// SBOMs, then its provenance unless that is `inline-only` and `inline`
/// is false (BuildKit's order: the frontend's attestations, then the
/// solver's provenance).
fn statements_for(
    attach: &Attach<'_>,
    platform: &Platform,
    manifest_json: &[u8],
    inline: bool,
) -> Vec<StatementBlob> {
    let digest = strata_oci::Digest::of(manifest_json);
    let subjects = image_subjects(attach.names, platform, &digest);
    let mut out = crate::sbom::statements(attach.sbom, platform, &subjects);
    out.extend(
        attach
            .provenance
            .iter()
            .filter(|p| p.platform == *platform && (inline || !p.request.inline_only))
            .map(|p| {
                let predicate_type = p.request.predicate_type();
                StatementBlob {
                    predicate_type: predicate_type.to_owned(),
                    json: statement(predicate_type, &subjects, &p.predicate),
                }
            }),
    );
    out
}

/// The index of `manifests` (each with its platform, annotations already
/// on the manifests) with `annotations`' descriptor and index ones, and an
/// attestation manifest per image with statements.
fn index_document(
    manifests: Vec<(Manifest, Vec<u8>, Platform)>,
    statements: impl Fn(&Platform, &[u8]) -> Vec<StatementBlob>,
    annotations: &Annotations,
) -> IndexDocument {
    let images: Vec<IndexImage> = manifests
        .into_iter()
        .map(|(manifest, json, platform)| IndexImage {
            statements: statements(&platform, &json),
            json,
            descriptor_annotations: annotations.of(AnnotationTarget::ManifestDescriptor, &platform),
            manifest,
            platform,
        })
        .collect();
    IndexDocument::new(
        &images,
        annotations.of_index(AnnotationTarget::Index),
        annotations.of_index(AnnotationTarget::IndexDescriptor),
    )
}

/// BuildKit's refusal of index annotations on an image that is no index.
const INDEX_ANNOTATIONS_SINGLE: &str = "index annotations not supported for single platform export";

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
) -> Result<()> {
    let tags = attach.names;
    let Some(dest) = &out.dest else { return Ok(()) };
    let [first, ..] = images else {
        return Err(other("no image to export"));
    };
    match &out.kind {
        OutputKind::Image => Ok(()),
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
                if !tar {
                    return strata_oci::archive::write_document_dir(dest, &blobs, &doc, tags)
                        .map_err(context(format!("writing {}", dest.display())));
                }
                return write_to(dest, |w| {
                    strata_oci::archive::write_document_archive(w, &blobs, &doc, tags)
                        .map_err(context(format!("writing {}", dest.display())))
                });
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
                return strata_oci::archive::write_oci_dir(dest, &blobs, &images)
                    .map_err(context(format!("writing {}", dest.display())));
            }
            write_to(dest, |w| {
                strata_oci::archive::write_archive(w, &blobs, &images, format)
                    .map_err(context(format!("writing {}", dest.display())))
            })
        }
        OutputKind::Local if images.len() > 1 => {
            // As buildx does: one folder per platform, `linux_arm64` etc.
            for pi in images {
                let mut name = format!("{}_{}", pi.platform.os, pi.platform.architecture);
                if let Some(v) = &pi.platform.variant {
                    name = format!("{name}_{v}");
                }
                let sub = dest.join(name);
                let files = FileAttestations {
                    attach,
                    platform: &pi.platform,
                };
                export_rootfs(store, &pi.image, &out.kind, &sub, epoch, &files)?;
            }
            Ok(())
        }
        OutputKind::Local | OutputKind::Tar => {
            check_outputs(std::slice::from_ref(out), images.len())?;
            let files = FileAttestations {
                attach,
                platform: &first.platform,
            };
            export_rootfs(store, &first.image, &out.kind, dest, epoch, &files)
        }
    }
}

/// What `--push` (`-o type=registry`) sends for `result`'s images when a
/// stored manifest alone will not do: an index with an attestation
/// manifest per image when there is provenance (pushed images always carry
/// it, `inline-only` or not, as BuildKit's image exporter forces), or
/// annotations, or several platforms. `None`: push the stored image as it
/// is. Each image must have been shipped (`Store::ship`) and be leased by
/// the caller.
pub fn registry_upload(
    store: &Store,
    result: &crate::api::BuildResult,
    names: &[String],
    annotations: &Annotations,
) -> Result<Option<strata_image::registry::Upload>> {
    let multi = result.platforms.len() > 1;
    let attested = !result.provenance.is_empty() || !result.sbom.is_empty();
    if !attested && annotations.is_empty() && !multi {
        return Ok(None);
    }
    let mut manifests = Vec::new();
    for (platform, id, _) in &result.platforms {
        let platform: Platform = platform
            .parse()
            .map_err(|e: strata_oci::platform::PlatformError| other(e.to_string()))?;
        let image = store
            .get_image(id)?
            .ok_or_else(|| other(format!("image {id} is no longer in the store")))?;
        let shipped = store.shipped(&image)?.ok_or_else(|| {
            other(format!(
                "image {id}: its layers are not compressed for shipping yet"
            ))
        })?;
        let raw = store.read_blob(&shipped.manifest)?;
        let mut manifest =
            Manifest::from_json(&raw).map_err(context(format!("manifest {}", shipped.manifest)))?;
        let added = annotations.of(AnnotationTarget::Manifest, &platform);
        // Pushed byte for byte as stored (so the registry serves the
        // digest `images --digests` shows), unless annotations change it.
        let json = if added.is_empty() {
            raw
        } else {
            manifest.annotations.extend(added);
            manifest.to_json()
        };
        manifests.push((manifest, json, platform));
    }
    let built: Vec<Platform> = manifests.iter().map(|(_, _, p)| p.clone()).collect();
    annotations.check_platforms(&built)?;
    let attach = Attach {
        provenance: &result.provenance,
        sbom: &result.sbom,
        names,
    };
    if !attested && !multi {
        // One manifest, annotated: pushed as it is, under the tag.
        if annotations.wants_index() {
            return Err(other(INDEX_ANNOTATIONS_SINGLE));
        }
        let Some((manifest, json, _)) = manifests.pop() else {
            return Err(other("no image to push"));
        };
        let mut store_blobs = vec![manifest.config.clone()];
        store_blobs.extend(manifest.layers.iter().cloned());
        return Ok(Some(strata_image::registry::Upload {
            store_blobs,
            blobs: Vec::new(),
            manifests: Vec::new(),
            top_media_type: if manifest.media_type.is_empty() {
                strata_oci::image::MEDIA_TYPE_OCI_MANIFEST.to_owned()
            } else {
                manifest.media_type.clone()
            },
            top: json,
        }));
    }
    let doc = index_document(
        manifests,
        |p, json| statements_for(&attach, p, json, true),
        annotations,
    );
    Ok(Some(strata_image::registry::Upload {
        store_blobs: doc.store_blobs,
        blobs: doc.blobs,
        manifests: doc.manifests,
        top_media_type: strata_oci::image::MEDIA_TYPE_OCI_INDEX.to_owned(),
        top: doc.json,
    }))
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

/// The attestations a `local`/`tar` output gets as files.
struct FileAttestations<'a> {
    attach: &'a Attach<'a>,
    platform: &'a Platform,
}

/// `type=local` / `type=tar`: the image's merged root filesystem, and each
/// provenance that is not `inline-only` as a file beside it.
fn export_rootfs(
    store: &Store,
    image: &ImageRecord,
    kind: &OutputKind,
    dest: &Path,
    epoch: i64,
    files: &FileAttestations<'_>,
) -> Result<()> {
    let tmp = store.scratch_dir("rootfs")?;
    for l in &image.layers {
        let r = store.open_layer_tar(l)?;
        strata_oci::apply::apply_layer(r, tmp.path(), &mut strata_oci::apply::DeleteWhiteouts)
            .map_err(context(format!("applying {}", l.diff_id)))?;
    }
    let statements = file_statements(files, tmp.path())?;
    for (name, json) in &statements {
        let p = tmp.path().join(name);
        fs_err::write(&p, json)?;
    }
    if *kind == OutputKind::Tar {
        return write_to(dest, |w| {
            strata_oci::layer::write_tree_tar(tmp.path(), Some(epoch), w)
                .map(|_| ())
                .map_err(context(format!("writing {}", dest.display())))
        });
    }
    copy_dir(tmp.path(), dest)
}

/// BuildKit's local and tar exporters (`exporter/local/fs.go`): each
/// attestation that is not `inline-only`, as an indented in-toto statement
/// whose subjects are every regular file of the output (path and sha256,
/// in walk order), in a file named by its `filename=` at the output's root.
fn file_statements(files: &FileAttestations<'_>, root: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    // (file name, predicate type, predicate).
    let mut wanted = crate::sbom::files(files.attach.sbom, files.platform);
    wanted.extend(
        files
            .attach
            .provenance
            .iter()
            .filter(|p| p.platform == *files.platform && !p.request.inline_only)
            .map(|p| {
                (
                    p.request.filename.clone(),
                    p.request.predicate_type(),
                    &p.predicate[..],
                )
            }),
    );
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let mut subjects = Vec::new();
    for entry in walkdir::WalkDir::new(root).sort_by_file_name() {
        let entry = entry.map_err(|e| other(format!("walking {}: {e}", root.display())))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .map_err(|e| other(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let mut r = strata_oci::DigestingReader::new(fs_err::File::open(entry.path())?);
        std::io::copy(&mut r, &mut std::io::sink())
            .map_err(io(format!("reading {}", entry.path().display())))?;
        let (_, digest, _) = r.finish();
        subjects.push(strata_oci::attestation::Subject::new(rel, &digest));
    }
    let mut out = Vec::new();
    for (name, predicate_type, predicate) in wanted {
        if name.contains('/') || name.is_empty() || out.iter().any(|(n, _)| *n == name) {
            return Err(other(format!(
                "attestation file name {name:?}: expected one plain file name per attestation"
            )));
        }
        let compact = statement(predicate_type, &subjects, predicate);
        out.push((name, strata_oci::attestation::indent_json(&compact)));
    }
    Ok(out)
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

/// Writes to a file atomically, or to stdout for `-`.
fn write_to(dest: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if dest == Path::new("-") {
        let mut out = std::io::stdout().lock();
        f(&mut out)?;
        return out.flush().map_err(io("writing to stdout"));
    }
    let mut file = strata_oci::AtomicFile::create_shared(dest)
        .map_err(io(format!("creating {}", dest.display())))?;
    {
        let mut w = std::io::BufWriter::new(&mut file);
        f(&mut w)?;
        w.flush()
            .map_err(io(format!("writing {}", dest.display())))?;
    }
    file.commit()
        .map_err(io(format!("writing {}", dest.display())))
}

/// `type=local`: the merged tree into `dest` (created if missing).
fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(format!("{}/.", src.display()))
        .arg(dest)
        .status();
    fs_err::create_dir_all(dest)?;
    let status = match status {
        Ok(s) if s.success() => return Ok(()),
        _ => std::process::Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(format!("{}/.", src.display()))
            .arg(dest)
            .status(),
    };
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(BuildError::Other(format!(
            "copying the root filesystem to {} failed ({s})",
            dest.display()
        ))),
        Err(e) => Err(BuildError::Io {
            context: "running cp".into(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_output_specs() {
        let o = parse_output("type=docker,dest=app.tar").unwrap();
        assert_eq!(o.kind, OutputKind::Docker);
        assert_eq!(o.dest.as_deref(), Some(Path::new("app.tar")));
        assert_eq!(
            parse_output("type=oci,dest=d,tar=false").unwrap().kind,
            OutputKind::Oci { tar: false }
        );
        assert_eq!(parse_output("out").unwrap().kind, OutputKind::Local);
        assert_eq!(parse_output("-").unwrap().kind, OutputKind::Tar);
        assert!(parse_output("type=docker").is_err());
        assert!(parse_output("type=nope,dest=x").is_err());
        assert!(parse_output("type=tar,dest=x,bogus=1").is_err());
        assert!(parse_output("type=oci,dest=x,compression=gzip").is_ok());
        let z = parse_output("type=oci,dest=x,compression=zstd,compression-level=19").unwrap();
        assert_eq!(
            z.compression,
            Some(strata_oci::Compression::Zstd { level: 19 })
        );
        assert!(z.explicit_level);
        let plain = parse_output("type=oci,dest=x,compression=zstd").unwrap();
        assert!(!plain.explicit_level && !plain.force_compression);
        assert!(parse_output("type=oci,dest=x,compression=zstd,force-compression=1").is_err());
        assert!(parse_output("type=oci,dest=x,compression=lz4").is_err());
        assert!(parse_output("type=oci,dest=x,compression=zstd,compression-level=99").is_err());
        assert!(parse_output("type=docker,dest=x,compression=zstd").is_err());
        assert!(
            parse_output("type=docker,dest=x,compression=uncompressed,force-compression=true")
                .unwrap()
                .force_compression
        );
    }
}
