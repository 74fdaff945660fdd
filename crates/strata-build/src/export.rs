//! Exporters for `strata build -o` (the `docker buildx build -o` syntax).

use std::io::Write;
use std::path::{Path, PathBuf};

use strata_oci::archive::{ArchiveFormat, ArchiveImage};
use strata_oci::image::Manifest;
use strata_store::{ImageRecord, Store};

use crate::{BuildError, Result, io, other};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// Into the local store (always done; named by -t).
    Image,
    /// docker-archive tar (`docker load`).
    Docker,
    /// OCI image layout, as a tar or (`tar=false`) a folder.
    Oci { tar: bool },
    /// The final root filesystem as plain files.
    Local,
    /// The final root filesystem as one tar.
    Tar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: OutputKind,
    /// `-` is stdout.
    pub dest: Option<PathBuf>,
    /// `compression=` (and `compression-level=`): layers are re-encoded on
    /// export when they are stored otherwise (or always, with `force`).
    pub compression: Option<strata_oci::Compression>,
    /// `force-compression=true`
    pub force_compression: bool,
}

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
            }
        } else {
            Output {
                kind: OutputKind::Local,
                dest: Some(PathBuf::from(spec)),
                compression: None,
                force_compression: false,
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut compression: Option<strata_oci::Compression> = None;
    let mut level: Option<i64> = None;
    let mut force_compression = false;
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
            "force-compression" => force_compression = v == "true",
            "name" | "oci-mediatypes" | "rewrite-timestamp" => {}
            other_key => return Err(other(format!("--output: unknown attribute {other_key:?}"))),
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
    })
}

pub(crate) fn export(
    store: &Store,
    image: &ImageRecord,
    tags: &[String],
    out: &Output,
    epoch: i64,
) -> Result<()> {
    let Some(dest) = &out.dest else { return Ok(()) };
    match &out.kind {
        OutputKind::Image => Ok(()),
        OutputKind::Docker | OutputKind::Oci { .. } => {
            let blobs = strata_oci::blobs::BlobStore::open(store.root().join("blobs"))
                .map_err(|e| other(e.to_string()))?;
            let raw = store.read_blob(&image.manifest)?;
            let mut manifest = Manifest::from_json(&raw).map_err(|e| other(e.to_string()))?;
            // Re-encoded layers (and a link to the config) live in a scratch
            // blob store that disappears after the export.
            let scratch;
            let blobs = match out.compression {
                Some(c) => {
                    let tmp_parent = store.root().join("tmp");
                    fs_err::create_dir_all(&tmp_parent).map_err(|e| other(e.to_string()))?;
                    scratch = tempfile::Builder::new()
                        .prefix("export-")
                        .tempdir_in(&tmp_parent)
                        .map_err(io("creating a scratch dir"))?;
                    recompress_layers(
                        &blobs,
                        scratch.path(),
                        &mut manifest,
                        c,
                        out.force_compression,
                    )?
                }
                None => blobs,
            };
            let images = [ArchiveImage {
                manifest,
                names: tags.to_vec(),
            }];
            let format = if out.kind == OutputKind::Docker {
                ArchiveFormat::Docker
            } else {
                ArchiveFormat::Oci
            };
            if out.kind == (OutputKind::Oci { tar: false }) {
                return strata_oci::archive::write_oci_dir(dest, &blobs, &images)
                    .map_err(|e| other(e.to_string()));
            }
            write_to(dest, |w| {
                strata_oci::archive::write_archive(w, &blobs, &images, format)
                    .map_err(|e| other(e.to_string()))
            })
        }
        OutputKind::Local | OutputKind::Tar => {
            let tmp_parent = store.root().join("tmp");
            fs_err::create_dir_all(&tmp_parent).map_err(|e| other(e.to_string()))?;
            let tmp = tempfile::Builder::new()
                .prefix("rootfs-")
                .tempdir_in(&tmp_parent)
                .map_err(io("creating a scratch dir"))?;
            for l in &image.layers {
                let r = store.open_layer_tar(l)?;
                strata_oci::apply::apply_layer(
                    r,
                    tmp.path(),
                    &mut strata_oci::apply::DeleteWhiteouts,
                )
                .map_err(|e| other(format!("applying {}: {e}", l.diff_id)))?;
            }
            if out.kind == OutputKind::Tar {
                return write_to(dest, |w| {
                    strata_oci::layer::write_tree_tar(tmp.path(), Some(epoch), w)
                        .map(|_| ())
                        .map_err(|e| other(e.to_string()))
                });
            }
            copy_dir(tmp.path(), dest)
        }
    }
}

/// Gives `manifest` layers encoded as `to` (re-encoding those stored
/// otherwise, or all with `force`), in a blob store under `dir` that also
/// holds the config; returns that store.
fn recompress_layers(
    stored: &strata_oci::BlobStore,
    dir: &Path,
    manifest: &mut Manifest,
    to: strata_oci::Compression,
    force: bool,
) -> Result<strata_oci::BlobStore> {
    let out = strata_oci::BlobStore::open(dir.join("blobs")).map_err(|e| other(e.to_string()))?;
    let link = |d: &strata_oci::Digest| -> Result<()> {
        let dst = out.path(d);
        if std::fs::hard_link(stored.path(d), &dst).is_err() {
            std::fs::copy(stored.path(d), &dst).map_err(io(format!("copying blob {d}")))?;
        }
        Ok(())
    };
    link(&manifest.config.digest)?;
    let docker = manifest.media_type == strata_oci::image::MEDIA_TYPE_DOCKER_MANIFEST;
    for l in &mut manifest.layers {
        let current = strata_oci::Compression::from_media_type(&l.media_type);
        let same_codec = current.is_some_and(|c| c.name() == to.name());
        if same_codec && !force {
            link(&l.digest)?;
            continue;
        }
        let src = stored
            .open_verified(&l.digest)
            .map_err(|e| other(e.to_string()))?;
        let mut w = out.writer().map_err(|e| other(e.to_string()))?;
        let (_, digest, size) = strata_oci::compress::recompress(src, to, 0, &mut w)
            .map_err(io(format!("re-encoding layer {}", l.digest)))?;
        w.commit(Some(digest)).map_err(|e| other(e.to_string()))?;
        l.digest = digest;
        l.size = size;
        l.media_type = if docker {
            to.docker_layer_media_type().to_owned()
        } else {
            to.oci_layer_media_type().to_owned()
        };
    }
    Ok(out)
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
    fs_err::create_dir_all(dest).map_err(|e| other(e.to_string()))?;
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
