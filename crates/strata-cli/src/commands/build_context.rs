//! Where `strata build` reads its context and Dockerfile from: a folder,
//! stdin, a git repository or an http(s) URL (fetched into a temporary
//! directory that lives as long as the build).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::exit::UsageError;

/// The context directory and the Dockerfile (name for messages, contents).
/// A context fetched from a URL lives in a temporary directory for the build.
pub(super) type Fetched = Option<strata_store::ScratchDir>;

/// Whether `s` names a git repository the way `docker build` recognises one.
pub(super) fn is_git_url(s: &str) -> bool {
    let base = s.split('#').next().unwrap_or(s);
    s.starts_with("git@")
        || s.starts_with("git://")
        || ((base.starts_with("https://")
            || base.starts_with("http://")
            || base.starts_with("file://"))
            && base.ends_with(".git"))
}

/// `URL#REF:SUBDIR` as docker reads it: clone (at REF, a branch, tag or
/// commit), then use SUBDIR of it as the context. The clone is a git work
/// tree, so the build epoch is its HEAD commit time.
pub(super) fn git_context(spec: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let (url, fragment) = spec.split_once('#').unwrap_or((spec, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    let repo = dir.join("repo");
    let git = |args: &[&str], cwd: Option<&Path>| -> anyhow::Result<()> {
        let mut c = std::process::Command::new("git");
        c.args(args).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(d) = cwd {
            c.current_dir(d);
        }
        let out = c.output().context("running git (is it installed?)")?;
        if !out.status.success() {
            anyhow::bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    };
    git(
        &["clone", "--quiet", url, repo.to_str().unwrap_or_default()],
        None,
    )
    .with_context(|| format!("unable to prepare context: cloning {url}"))?;
    if !reference.is_empty() {
        git(&["checkout", "--quiet", reference], Some(&repo))
            .with_context(|| format!("unable to prepare context: {url}#{reference}"))?;
    }
    let ctx = strata_oci::path::secure_join(&repo, Path::new(subdir.trim_matches('/')))
        .map_err(|e| UsageError(format!("{spec}: subdirectory {subdir:?}: {e}")))?;
    if !ctx.is_dir() {
        return Err(UsageError(format!(
            "{spec}: {subdir:?} is not a directory of the repository"
        ))
        .into());
    }
    Ok(ctx)
}

/// An http(s) URL: a tar archive (gzip, bzip2, xz, zstd or plain) is the
/// context; anything else is taken as the Dockerfile itself, with an empty
/// context, as docker does.
fn url_context(
    url: &str,
    dir: &Path,
    registry: &super::registry::RegistryFlags,
) -> anyhow::Result<(PathBuf, Option<String>)> {
    let client = registry.client(Default::default())?;
    let download = dir.join("download");
    client
        .download(url, &download)
        .with_context(|| format!("unable to prepare context: downloading {url}"))?;
    let ctx = dir.join("context");
    fs_err::create_dir_all(&ctx)?;
    // A tar archive has "ustar" at offset 257 of its first header, once
    // decompressed; anything else is taken as a Dockerfile.
    let is_tar = {
        let (_, mut r) = strata_oci::compress::decompress(fs_err::File::open(&download)?)?;
        let mut head = [0u8; 512];
        r.read_exact(&mut head).is_ok() && &head[257..262] == b"ustar"
    };
    if is_tar {
        let (_, reader) = strata_oci::compress::decompress(fs_err::File::open(&download)?)?;
        strata_oci::apply::apply_layer(reader, &ctx, &mut strata_oci::apply::DeleteWhiteouts)
            .map_err(|e| {
                UsageError(format!(
                    "{url}: unpacking the context: {:#}",
                    anyhow::Error::from(e)
                ))
            })?;
        return Ok((ctx, None));
    }
    let text = fs_err::read_to_string(&download).map_err(|e| {
        UsageError(format!(
            "{url}: neither a tar archive nor a Dockerfile ({e})"
        ))
    })?;
    Ok((ctx, Some(text)))
}

pub(super) fn read_inputs(
    context: &str,
    file: Option<&str>,
    registry: &super::registry::RegistryFlags,
) -> anyhow::Result<(PathBuf, String, String, Fetched)> {
    let from_stdin = context == "-";
    if from_stdin && file == Some("-") {
        return Err(UsageError(
            "the context and the Dockerfile cannot both be read from stdin".into(),
        )
        .into());
    }
    let remote =
        is_git_url(context) || context.starts_with("http://") || context.starts_with("https://");
    let mut fetched: Fetched = None;
    let mut dockerfile_from_url = None;
    let context = if from_stdin || remote {
        // A scratch directory in the store, removed when the build ends
        // (and by the next build's sweep if this one is killed).
        let tmp = super::store::open_store()?
            .scratch_dir("context")
            .context("creating a directory for the context")?;
        let ctx = if from_stdin {
            // No context: an empty directory, so COPY finds nothing.
            tmp.path().to_owned()
        } else if is_git_url(context) {
            git_context(context, tmp.path())?
        } else {
            let (ctx, df) = url_context(context, tmp.path(), registry)?;
            dockerfile_from_url = df;
            ctx
        };
        fetched = Some(tmp);
        ctx
    } else {
        let p = PathBuf::from(&context);
        if !p.is_dir() {
            return Err(UsageError(format!(
                "unable to prepare context: path {:?} not found or not a directory",
                context
            ))
            .into());
        }
        p
    };
    if let Some(text) = dockerfile_from_url {
        return Ok((context, "Dockerfile".to_owned(), text, fetched));
    }
    let (name, text) = match file {
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from stdin")?;
            ("Dockerfile".to_owned(), s)
        }
        _ if from_stdin => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from stdin")?;
            ("Dockerfile".to_owned(), s)
        }
        Some(f) => {
            // For a fetched context, -f names a file inside it, as in docker.
            let p = if remote {
                strata_oci::path::secure_join(&context, Path::new(f))
                    .map_err(|e| UsageError(format!("-f {f}: {e}")))?
            } else {
                PathBuf::from(f)
            };
            let text = fs_err::read_to_string(&p)
                .map_err(|e| UsageError(format!("failed to read Dockerfile: {e}")))?;
            (f.to_owned(), text)
        }
        None => {
            let p = context.join("Dockerfile");
            let text = fs_err::read_to_string(&p)
                .map_err(|e| UsageError(format!("failed to read Dockerfile: {e}")))?;
            ("Dockerfile".to_owned(), text)
        }
    };
    Ok((context, name, text, fetched))
}
