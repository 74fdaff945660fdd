//! `--build-context NAME=VALUE` (and bake's `contexts`): each value in the
//! forms buildx 0.29 accepts, made into what the solver reads
//! ([`strata_build::NamedContext`]). buildx's `build/opt.go` decides the
//! form in this order: `docker-image://`, a git or http(s) URL, then
//! `oci-layout://`, else a local directory that must exist.
//!
//! Git and http contexts are fetched here, into scratch directories of the
//! store that live as long as the returned [`Fetched`]; an OCI layout's
//! image is loaded into the store and held in the build's lease.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_build::NamedContext;
use strata_oci::Digest;
use strata_oci::image::{
    ANNOTATION_CONTAINERD_IMAGE_NAME, ANNOTATION_REF_NAME, Descriptor, Index,
    MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_OCI_INDEX, Manifest,
};

use super::build_context::{git_context, is_git_url};
use crate::exit::UsageError;

/// Scratch directories holding fetched contexts; removed when dropped.
pub(super) type Fetched = Vec<strata_store::ScratchDir>;

/// What resolving a context needs besides its text.
pub(super) struct Resolve<'a> {
    pub(super) store: &'a strata_store::Store,
    /// Holds an `oci-layout://` image from its load until the build ends.
    pub(super) lease: &'a strata_store::Lease,
    pub(super) registry: &'a super::registry::RegistryFlags,
    /// The build's platforms (the host's when empty): an OCI layout's
    /// index yields the manifest for the first.
    pub(super) platforms: &'a [strata_oci::Platform],
}

/// `NAME=VALUE` strings as buildx's `ParseContextNames` reads them: empty
/// ones skipped, the name normalised (`alpine:latest` is `alpine`), a later
/// value for a name replacing an earlier one.
pub(super) fn split_contexts(values: &[String]) -> Result<BTreeMap<String, String>, UsageError> {
    let mut out = BTreeMap::new();
    for v in values.iter().filter(|v| !v.is_empty()) {
        let (name, value) = v.split_once('=').ok_or_else(|| {
            UsageError(format!(
                "invalid context value: {v}, expected key=value (--build-context)"
            ))
        })?;
        let key = strata_build::named_context_name(name).ok_or_else(|| {
            UsageError(format!(
                "invalid context name {name}: a named context is named like an image (lowercase, [a-z0-9._/-])"
            ))
        })?;
        out.insert(key, value.to_owned());
    }
    Ok(out)
}

/// Each context of `values` (name → value, from [`split_contexts`] or a
/// bake target), with the scratch directories fetched ones live in.
/// Relative directories are taken from `base`.
pub(super) fn resolve_contexts(
    values: &BTreeMap<String, String>,
    base: &Path,
    r: &Resolve<'_>,
) -> anyhow::Result<(BTreeMap<String, NamedContext>, Fetched)> {
    let mut out = BTreeMap::new();
    let mut fetched = Vec::new();
    for (name, value) in values {
        let ctx = resolve_one(name, value, base, r, &mut fetched)
            .with_context(|| format!("build context {name}={value}"))?;
        out.insert(name.clone(), ctx);
    }
    Ok((out, fetched))
}

fn resolve_one(
    name: &str,
    value: &str,
    base: &Path,
    r: &Resolve<'_>,
    fetched: &mut Fetched,
) -> anyhow::Result<NamedContext> {
    if let Some(reference) = value.strip_prefix("docker-image://") {
        strata_oci::reference::Reference::parse(reference)
            .map_err(|e| UsageError(format!("docker-image://{reference}: {e}")))?;
        return Ok(NamedContext::Image(reference.to_owned()));
    }
    if value.starts_with("target:") {
        return Err(UsageError(format!(
            "{value}: target: contexts name bake targets; they work in `strata bake` only"
        ))
        .into());
    }
    if is_git_url(value) {
        let dir = r
            .store
            .scratch_dir("context")
            .context("creating a directory for the context")?;
        let checkout = git_context(value, dir.path())?;
        // BuildKit's git source leaves the repository out (no `.git`,
        // unless asked with keep-git-dir).
        let git_dir = dir.path().join("repo").join(".git");
        if git_dir.exists() {
            fs_err::remove_dir_all(&git_dir)?;
        }
        fetched.push(dir);
        return Ok(NamedContext::Dir(checkout));
    }
    if value.starts_with("http://") || value.starts_with("https://") {
        return http_context(value, r, fetched);
    }
    if let Some(layout) = value.strip_prefix("oci-layout://") {
        let spec = LayoutRef::parse(layout)?;
        let id = load_layout(&spec, r)?;
        return Ok(NamedContext::Image(id.to_string()));
    }
    let dir = base.join(value);
    let meta = fs_err::metadata(&dir)
        .map_err(|e| UsageError(format!("failed to get build context {name}: {e}")))?;
    if !meta.is_dir() {
        return Err(UsageError(format!(
            "failed to get build context path {}: not a directory",
            dir.display()
        ))
        .into());
    }
    Ok(NamedContext::Dir(dir))
}

/// An http(s) URL that is not a git repository: BuildKit's frontend makes
/// it an `llb.HTTP` source with `Filename("context")`, so the context holds
/// one file, `context`, the download as it is (not unpacked), mode 0600 as
/// BuildKit's http source writes it.
fn http_context(url: &str, r: &Resolve<'_>, fetched: &mut Fetched) -> anyhow::Result<NamedContext> {
    let dir = r
        .store
        .scratch_dir("context")
        .context("creating a directory for the context")?;
    let ctx = dir.path().join("context-dir");
    fs_err::create_dir_all(&ctx)?;
    let file = ctx.join("context");
    let client = r.registry.client(Default::default())?;
    client
        .download(url, &file)
        .with_context(|| format!("downloading {url}"))?;
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
    fetched.push(dir);
    Ok(NamedContext::Dir(ctx))
}

/// `oci-layout://PATH[:TAG][@DIGEST]` as buildx's `ocilayout.Parse` splits
/// it: a digest after the last `@`, then a tag after the last `:`; neither
/// means the tag `latest`.
#[derive(Debug, PartialEq, Eq)]
struct LayoutRef {
    path: PathBuf,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl LayoutRef {
    fn parse(s: &str) -> Result<Self, UsageError> {
        let mut rest = s;
        let mut digest = None;
        if let Some((before, after)) = rest.rsplit_once('@')
            && after.starts_with("sha256:")
        {
            digest = Some(
                after
                    .parse::<Digest>()
                    .map_err(|e| UsageError(format!("oci-layout://{s}: digest {after:?}: {e}")))?,
            );
            rest = before;
        }
        let mut tag = None;
        if let Some((before, after)) = rest.rsplit_once(':')
            && is_tag(after)
        {
            tag = Some(after.to_owned());
            rest = before;
        }
        if rest.is_empty() {
            return Err(UsageError(format!("oci-layout://{s}: no layout path")));
        }
        if tag.is_none() && digest.is_none() {
            tag = Some("latest".to_owned());
        }
        Ok(Self {
            path: PathBuf::from(rest),
            tag,
            digest,
        })
    }
}

/// distribution/reference's `TagRegexp`: `[\w][\w.-]{0,127}`.
fn is_tag(s: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    s.len() <= 128
        && s.chars().next().is_some_and(word)
        && s.chars().all(|c| word(c) || c == '.' || c == '-')
}

/// The largest JSON document (index, manifest) read from a layout.
const MAX_JSON: u64 = 4 << 20;

fn read_json(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = fs_err::metadata(path)?.len();
    if size > MAX_JSON {
        anyhow::bail!("{} is {size} bytes, too large for JSON", path.display());
    }
    Ok(fs_err::read(path)?)
}

fn blob_path(layout: &Path, d: &Digest) -> PathBuf {
    layout.join("blobs").join("sha256").join(d.hex())
}

/// Loads the image `spec` names from its layout into the store, unnamed,
/// and holds it in the build's lease in the same hold of the store lock.
/// The digest picks any manifest or index in the layout's blobs (as
/// BuildKit reads it from the content store buildx hands over); else the
/// tag picks the `index.json` entry whose image name or ref name is that
/// tag, else the only entry (buildx's `resolveDigest`). An index yields the
/// manifest for the build's platform, with containerd's rules.
fn load_layout(spec: &LayoutRef, r: &Resolve<'_>) -> anyhow::Result<Digest> {
    let layout = &spec.path;
    let platform = r
        .platforms
        .first()
        .cloned()
        .unwrap_or_else(strata_oci::Platform::host);
    let mut desc = match spec.digest {
        Some(d) => {
            let data = read_json(&blob_path(layout, &d))
                .with_context(|| format!("{}: reading {d}", layout.display()))?;
            let media_type = serde_json::from_slice::<serde_json::Value>(&data)
                .ok()
                .and_then(|v| {
                    let mt = v
                        .get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(str::to_owned);
                    mt.or_else(|| v.get("manifests").map(|_| MEDIA_TYPE_OCI_INDEX.to_owned()))
                })
                .unwrap_or_else(|| strata_oci::image::MEDIA_TYPE_OCI_MANIFEST.to_owned());
            Descriptor::new(media_type, d, data.len() as u64)
        }
        None => {
            let index = Index::from_json(
                &read_json(&layout.join("index.json"))
                    .with_context(|| format!("{} is not an OCI layout", layout.display()))?,
            )?;
            let tag = spec.tag.as_deref().unwrap_or("latest");
            let named = |key: &str| {
                index
                    .manifests
                    .iter()
                    .find(|m| m.annotations.get(key).is_some_and(|v| v == tag))
            };
            let found = named(ANNOTATION_CONTAINERD_IMAGE_NAME)
                .or_else(|| named(ANNOTATION_REF_NAME))
                .or_else(|| (index.manifests.len() == 1).then(|| &index.manifests[0]));
            found
                .cloned()
                .ok_or_else(|| {
                    UsageError(format!(
                        "oci-layout {}: no image tagged {tag:?} in its index.json, and it lists {} images",
                        layout.display(),
                        index.manifests.len()
                    ))
                })?
        }
    };
    // An index: the manifest for the platform, descending nested indexes.
    for _ in 0..4 {
        if desc.media_type != MEDIA_TYPE_OCI_INDEX && desc.media_type != MEDIA_TYPE_DOCKER_LIST {
            break;
        }
        let index = Index::from_json(&read_json(&blob_path(layout, &desc.digest))?)?;
        desc = platform
            .pick(
                index
                    .manifests
                    .iter()
                    .filter_map(|m| m.platform.as_ref().map(|p| (p, m))),
            )
            .cloned()
            .ok_or_else(|| {
                UsageError(format!(
                    "oci-layout {}: index {} has no image for {platform}",
                    layout.display(),
                    desc.digest
                ))
            })?;
    }
    let manifest = Manifest::from_json(&read_json(&blob_path(layout, &desc.digest))?)?;
    let mut blobs = vec![desc.digest, manifest.config.digest];
    blobs.extend(manifest.layers.iter().map(|l| l.digest));
    // The chosen manifest as the only entry of the archive's index, with no
    // names, so the store records the image unnamed; the reader checks
    // every digest as it stores the blobs.
    let mut entry = Descriptor::new(desc.media_type.clone(), desc.digest, desc.size);
    entry.platform = desc.platform.clone();
    let index = Index::new(vec![entry]).to_json();
    let (reader, writer) = std::io::pipe().context("making a pipe for the layout")?;
    let lock = r.store.lock()?;
    let loaded = std::thread::scope(|s| {
        let writing = s.spawn(|| write_layout_tar(writer, layout, &index, &blobs));
        let loaded =
            strata_store::load_archive(r.store, &lock, layout, std::io::BufReader::new(reader));
        let written = writing
            .join()
            .map_err(|_| anyhow::anyhow!("the layout writer panicked"))?;
        // A failed write shows up as a truncated archive to the reader; the
        // writer's error names the file.
        written?;
        loaded.map_err(anyhow::Error::from)
    })?;
    let image = loaded
        .first()
        .ok_or_else(|| anyhow::anyhow!("{}: no image loaded", layout.display()))?;
    let record = r.store.resolve(&image.id.to_string())?;
    r.lease
        .hold_image(r.store, &lock, &record, &image.id.to_string())?;
    Ok(image.id)
}

/// A tar of an OCI layout holding `index` and `blobs` of `layout`, written
/// into `out` as the store's archive reader reads it.
fn write_layout_tar(
    out: impl Write,
    layout: &Path,
    index: &[u8],
    blobs: &[Digest],
) -> anyhow::Result<()> {
    let mut tar = tar::Builder::new(out);
    let mut file = |name: &str, data: &[u8]| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data)
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file("index.json", index)?;
    let mut seen = std::collections::BTreeSet::new();
    for d in blobs.iter().filter(|d| seen.insert(**d)) {
        let path = blob_path(layout, d);
        let mut f = fs_err::File::open(&path)?;
        tar.append_file(format!("blobs/sha256/{}", d.hex()), f.file_mut())
            .with_context(|| format!("reading {}", path.display()))?;
    }
    tar.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_references_split_as_buildx_does() {
        let d = format!("sha256:{}", "a".repeat(64));
        let parse = |s: &str| LayoutRef::parse(s).unwrap();
        assert_eq!(
            parse("/path/to/layout"),
            LayoutRef {
                path: "/path/to/layout".into(),
                tag: Some("latest".into()),
                digest: None
            }
        );
        assert_eq!(parse("/path/to/layout:1.3").tag.as_deref(), Some("1.3"));
        let both = parse(&format!("/p/l:1.3@{d}"));
        assert_eq!(both.path, PathBuf::from("/p/l"));
        assert_eq!(both.tag.as_deref(), Some("1.3"));
        assert_eq!(both.digest.map(|x| x.to_string()), Some(d.clone()));
        // An `@` that is not before a digest stays in the path.
        assert_eq!(parse("/p/@/layout").path, PathBuf::from("/p/@/layout"));
        assert_eq!(parse(&format!("/p/@/l@{d}")).tag, None);
        assert!(LayoutRef::parse("/p@sha256:zz").is_err());
    }

    #[test]
    fn names_are_normalised_and_checked() {
        let m = split_contexts(&[
            "alpine:latest=docker-image://alpine:3".into(),
            "docker.io/library/base=./dir".into(),
            String::new(),
        ])
        .unwrap();
        assert_eq!(
            m.keys().map(String::as_str).collect::<Vec<_>>(),
            ["alpine", "base"]
        );
        assert!(split_contexts(&["Upper=./x".into()]).is_err());
        assert!(split_contexts(&["novalue".into()]).is_err());
    }
}
