//! `type=local` and `type=tar`: images as root filesystems, one folder per
//! platform when there are several (as BuildKit's local and tar exporters
//! write them), with the attestations as files.

use std::io::Write;
use std::path::Path;

use strata_oci::attestation::statement;
use strata_oci::image::Platform;
use strata_store::Store;

use super::index::{Attach, PlatformImage};
use crate::api::OutputKind;
use crate::error::{BuildError, Result, context, io, other};

/// The attestations a `local`/`tar` output gets as files.
struct FileAttestations<'a> {
    attach: &'a Attach<'a>,
    platform: &'a Platform,
}

/// `type=local` / `type=tar` of `images` into `dest`: one image's merged
/// root filesystem with each provenance that is not `inline-only` as a
/// file beside it, or for several platforms a folder per platform holding
/// that (`linux_amd64/`, `linux_arm_v7/`: BuildKit names them by the
/// platform with `/` made `_`, `exporter/tar/export.go`).
pub(crate) fn export(
    store: &Store,
    images: &[PlatformImage],
    kind: &OutputKind,
    dest: &Path,
    epoch: i64,
    attach: &Attach<'_>,
) -> Result<()> {
    let tmp = store.scratch_dir("rootfs")?;
    match images {
        [] => return Err(other("no image to export")),
        [one] => merge_into(store, one, attach, tmp.path())?,
        several => {
            // The folders' own entries (in a tar) are 0755 whatever the
            // images' roots are, as BuildKit's.
            set_mode(tmp.path(), 0o755)?;
            for pi in several {
                let sub = tmp.path().join(platform_dir(&pi.platform));
                fs_err::create_dir(&sub)?;
                merge_into(store, pi, attach, &sub)?;
                set_mode(&sub, 0o755)?;
            }
        }
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

/// A platform's folder in a multi-platform `local`/`tar` output.
fn platform_dir(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}_{}_{v}", p.os, p.architecture),
        None => format!("{}_{}", p.os, p.architecture),
    }
}

fn set_mode(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// `pi`'s layers applied in order into `root`, and its attestation files.
fn merge_into(store: &Store, pi: &PlatformImage, attach: &Attach<'_>, root: &Path) -> Result<()> {
    for l in &pi.image.layers {
        let r = store.open_layer_tar(l)?;
        strata_oci::apply::apply_layer(r, root, &mut strata_oci::apply::DeleteWhiteouts)
            .map_err(context(format!("applying {}", l.diff_id)))?;
    }
    let files = FileAttestations {
        attach,
        platform: &pi.platform,
    };
    for (name, json) in &file_statements(&files, root)? {
        fs_err::write(root.join(name), json)?;
    }
    Ok(())
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

/// Writes to a file atomically, or to stdout for `-`.
pub(crate) fn write_to(dest: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
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
    // An export: atomic, not fsynced (as BuildKit's tar exporters and
    // `docker save -o`).
    file.commit_unsynced()
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
