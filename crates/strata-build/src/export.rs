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
}

/// Parses `type=docker,dest=app.tar` (or the shorthand `PATH`, which means
/// `type=local,dest=PATH`, and `-`, a tar to stdout), as buildx does.
pub fn parse_output(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output {
                kind: OutputKind::Tar,
                dest: Some(PathBuf::from("-")),
            }
        } else {
            Output {
                kind: OutputKind::Local,
                dest: Some(PathBuf::from(spec)),
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
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
            // Layers are stored gzip-compressed and exported as stored;
            // re-compressing on export is not implemented yet, so anything
            // but gzip is refused rather than silently ignored.
            "compression" if v == "gzip" => {}
            "compression" => {
                return Err(other(format!(
                    "--output compression={v}: only gzip is supported by this version of strata"
                )));
            }
            "compression-level" | "name" | "oci-mediatypes" | "rewrite-timestamp" => {}
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
    Ok(Output { kind, dest })
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
            let manifest = Manifest::from_json(&raw).map_err(|e| other(e.to_string()))?;
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
        assert!(parse_output("type=oci,dest=x,compression=zstd").is_err());
    }
}
