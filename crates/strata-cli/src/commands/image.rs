//! Everyday image commands on the local store: `images`, `inspect`,
//! `history`, `tag`, `rmi`, `image prune`, `diff`, `save`, `load` and
//! `import`, with Docker's output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use strata_oci::Digest;
use strata_store::{ImageRecord, RmiEvent, RmiOptions, Store, familiar, split_repo_tag};

use super::store::open_store;
use crate::exit::UsageError;
use crate::render::{self, Format, ago, human_size, human_size_prec};

#[derive(clap::Args)]
pub struct ImagesArgs {
    /// Only images matching REPOSITORY[:TAG]
    pub reference: Option<String>,
    /// Show all images (including intermediate ones)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output (dangling=true|false, reference=PATTERN)
    #[arg(short, long)]
    pub filter: Vec<String>,
    /// Format output: table, json, or a template such as '{{.ID}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Show low-level information about an image as JSON
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Remove one or more images
    Rm(RmiArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(TagArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Load images from a tar archive
    Load(LoadArgs),
    /// Create an image from a root filesystem tarball
    Import(ImportArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Images by name or ID
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Format output with a template such as '{{.Id}}'
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Image by name or ID
    pub image: String,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub human: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: table, json, or a template
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(clap::Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(clap::Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Force removal of the image
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long)]
    pub no_prune: bool,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Image or container
    pub a: String,
    /// Second image: show what changes A into B
    pub b: Option<String>,
}

#[derive(clap::Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file instead of standard output
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of standard input
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args)]
pub struct ImportArgs {
    pub tarball: PathBuf,
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the created image
    #[arg(short, long)]
    pub change: Vec<String>,
    /// Commit message for the imported image
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation (strata never prompts)
    #[arg(short, long)]
    pub force: bool,
}

pub(crate) fn out(s: &str) -> anyhow::Result<()> {
    let mut o = std::io::stdout().lock();
    o.write_all(s.as_bytes())?;
    o.flush()?;
    Ok(())
}

fn id_str(d: &Digest, no_trunc: bool) -> String {
    if no_trunc { d.to_string() } else { d.short() }
}

/// `*` globbing (Docker's reference filter uses path.Match).
fn glob(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len()).any(|i| {
                rest.is_char_boundary(i) && !rest[..i].contains('/') && glob(tail, &rest[i..])
            })
        }
    }
}

fn ref_matches(pat: &str, tag: &str) -> bool {
    let fam = familiar(tag);
    let (repo, _) = split_repo_tag(&fam);
    if pat.contains(':') {
        glob(pat, &fam)
    } else {
        glob(pat, &repo)
    }
}

pub fn images(a: ImagesArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let all = store.images()?;
    // Only a shown digest is worth compressing layers for: `--digests`,
    // JSON rows (every field) or a template naming it.
    let wants_digest = a.digests
        || match Format::parse(a.format.as_deref()) {
            Format::Table => false,
            Format::Json => true,
            Format::Template { template, .. } => template.contains("Digest"),
        };
    let parents: BTreeSet<Digest> = all.iter().filter_map(|(i, _)| i.parent).collect();
    let mut dangling_filter = None;
    let mut ref_filters = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some(("dangling", v)) => {
                dangling_filter = Some(v.eq_ignore_ascii_case("true") || v == "1")
            }
            Some(("reference", v)) => ref_filters.push(v.to_owned()),
            _ => {
                return Err(UsageError(format!(
                    "invalid filter '{f}' (dangling=true|false, reference=PATTERN)"
                ))
                .into());
            }
        }
    }
    if let Some(r) = &a.reference {
        ref_filters.push(r.clone());
    }
    let now = strata_store::now_unix();
    let mut rows = Vec::new();
    let mut ids = Vec::new();
    for (img, tags) in &all {
        let dangling = tags.is_empty();
        // Untagged parents of other images are intermediate: hidden without -a.
        if dangling && parents.contains(&img.id) && !a.all {
            continue;
        }
        if let Some(want) = dangling_filter
            && want != dangling
        {
            continue;
        }
        let shown: Vec<Option<&String>> = if dangling {
            vec![None]
        } else {
            tags.iter().map(Some).collect()
        };
        for t in shown {
            if !ref_filters.is_empty()
                && !t.is_some_and(|t| ref_filters.iter().any(|p| ref_matches(p, t)))
            {
                continue;
            }
            let (repo, tag) = t
                .map(|t| split_repo_tag(&familiar(t)))
                .unwrap_or(("<none>".into(), "<none>".into()));
            let mut r = BTreeMap::new();
            r.insert("Repository".to_owned(), repo);
            r.insert("Tag".to_owned(), tag);
            r.insert("ID".to_owned(), id_str(&img.id, a.no_trunc));
            let digest = if wants_digest {
                super::ship::shipped_digest(&store, img)?.to_string()
            } else {
                img.manifest.to_string()
            };
            r.insert("Digest".to_owned(), digest);
            r.insert("CreatedSince".to_owned(), ago(img.created, now));
            r.insert("CreatedAt".to_owned(), strata_store::rfc3339(img.created));
            r.insert("Size".to_owned(), human_size_prec(img.size(), 3));
            r.insert("VirtualSize".to_owned(), human_size_prec(img.size(), 3));
            r.insert("Containers".to_owned(), "N/A".to_owned());
            r.insert("SharedSize".to_owned(), "N/A".to_owned());
            r.insert("UniqueSize".to_owned(), "N/A".to_owned());
            rows.push(r);
            if !ids.contains(&img.id) {
                ids.push(img.id);
            }
        }
    }
    if a.quiet {
        let s: String = ids.iter().map(|d| id_str(d, a.no_trunc) + "\n").collect();
        out(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut cols = vec![("REPOSITORY", "Repository"), ("TAG", "Tag")];
    if a.digests {
        cols.push(("DIGEST", "Digest"));
    }
    cols.extend([
        ("IMAGE ID", "ID"),
        ("CREATED", "CreatedSince"),
        ("SIZE", "Size"),
    ]);
    out(&render::render(
        &Format::parse(a.format.as_deref()),
        &cols,
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn image(c: ImageCommand) -> anyhow::Result<ExitCode> {
    match c {
        ImageCommand::Ls(a) => images(a),
        ImageCommand::Prune(a) => prune(a),
        ImageCommand::Inspect(a) => inspect(a),
        ImageCommand::History(a) => history(a),
        ImageCommand::Rm(a) => rmi(a),
        ImageCommand::Tag(a) => tag(a),
        ImageCommand::Save(a) => save(a),
        ImageCommand::Load(a) => load(a),
        ImageCommand::Import(a) => import(a),
    }
}

fn inspect_json(store: &Store, img: &ImageRecord, tags: &[String]) -> anyhow::Result<Value> {
    let cfg = store.image_config(img)?;
    let manifest = if tags.is_empty() {
        img.manifest
    } else {
        super::ship::shipped_digest(store, img)?
    };
    let repo_digests: Vec<String> = tags
        .iter()
        .map(|t| format!("{}@{}", split_repo_tag(&familiar(t)).0, manifest))
        .chain(img.repo_digests.iter().map(|d| familiar(d)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(json!({
        "Id": img.id.to_string(),
        "RepoTags": tags.iter().map(|t| familiar(t)).collect::<Vec<_>>(),
        "RepoDigests": repo_digests,
        "Parent": img.parent.map(|p| p.to_string()).unwrap_or_default(),
        "Comment": cfg["history"].as_array().and_then(|h| h.last()).and_then(|h| h["comment"].as_str()).unwrap_or(""),
        "Created": cfg["created"].clone(),
        "DockerVersion": "",
        "Author": cfg.get("author").cloned().unwrap_or(json!("")),
        "Config": cfg.get("config").cloned().unwrap_or(json!({})),
        "Architecture": cfg["architecture"].clone(),
        "Variant": cfg.get("variant").cloned().unwrap_or(Value::Null),
        "Os": cfg["os"].clone(),
        "Size": img.size(),
        "VirtualSize": img.size(),
        "GraphDriver": {"Name": "overlay2", "Data": Value::Null},
        "RootFS": {"Type": "layers", "Layers": img.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    }))
}

pub fn inspect(a: InspectArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let all = store.images()?;
    let mut items = Vec::new();
    let mut failed = false;
    for name in &a.images {
        match store.resolve(name) {
            Ok(img) => {
                let tags = all
                    .iter()
                    .find(|(i, _)| i.id == img.id)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                items.push(inspect_json(&store, &img, &tags)?);
            }
            Err(e) => {
                #[expect(
                    clippy::print_stderr,
                    reason = "per-name errors, as docker prints them"
                )]
                {
                    eprintln!("Error: {e}");
                }
                failed = true;
            }
        }
    }
    match a.format.as_deref() {
        None | Some("json") => out(&(serde_json::to_string_pretty(&items)? + "\n"))?,
        Some(t) => {
            for it in &items {
                let fields: BTreeMap<String, String> = it
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| {
                                (
                                    k.clone(),
                                    v.as_str()
                                        .map(str::to_owned)
                                        .unwrap_or_else(|| v.to_string()),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out(&(render::expand(t, &fields) + "\n"))?;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(crate::exit::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn history(a: HistoryArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let img = store.resolve(&a.image)?;
    let cfg = store.image_config(&img)?;
    let hist = cfg["history"].as_array().cloned().unwrap_or_default();
    let now = strata_store::now_unix();
    let mut layers = img.layers.iter().rev();
    let mut rows = Vec::new();
    let n = hist.len();
    // Local images that are a prefix of this one (same layers and history
    // length so far) get their ID shown instead of <missing>, as Docker does.
    let mut local: Vec<(usize, usize, Digest)> = Vec::new();
    for (other, _) in store.images()? {
        if other.layers.len() <= img.layers.len()
            && other
                .layers
                .iter()
                .zip(&img.layers)
                .all(|(a, b)| a.diff_id == b.diff_id)
            && let Ok(c) = store.image_config(&other)
        {
            let hl = c["history"].as_array().map(Vec::len).unwrap_or(0);
            local.push((hl, other.layers.len(), other.id));
        }
    }
    let mut remaining_layers = img.layers.len();
    // Walk newest first, pairing non-empty history entries with layers from the top.
    for (i, h) in hist.iter().rev().enumerate() {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let hist_len = n - i;
        let shown_id = if i == 0 {
            Some(img.id)
        } else {
            local
                .iter()
                .find(|(hl, nl, _)| *hl == hist_len && *nl == remaining_layers)
                .map(|(_, _, id)| *id)
        };
        let size = if empty {
            0
        } else {
            remaining_layers = remaining_layers.saturating_sub(1);
            layers.next().map(|l| l.uncompressed_size).unwrap_or(0)
        };
        let created = h["created"]
            .as_str()
            .and_then(strata_store::parse_rfc3339)
            .unwrap_or(0);
        let mut by = h["created_by"].as_str().unwrap_or("").to_owned();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        let mut r = BTreeMap::new();
        let shown = shown_id.map(|d| id_str(&d, a.no_trunc));
        r.insert("ID".into(), shown.unwrap_or_else(|| "<missing>".into()));
        r.insert(
            "CreatedSince".into(),
            if a.human {
                ago(created, now)
            } else {
                h["created"].as_str().unwrap_or("").to_owned()
            },
        );
        r.insert(
            "CreatedAt".into(),
            h["created"].as_str().unwrap_or("").to_owned(),
        );
        r.insert("CreatedBy".into(), by);
        r.insert(
            "Size".into(),
            if a.human {
                human_size_prec(size, 3)
            } else {
                size.to_string()
            },
        );
        r.insert(
            "Comment".into(),
            h["comment"].as_str().unwrap_or("").to_owned(),
        );
        rows.push(r);
    }
    if n == 0 {
        let mut r = BTreeMap::new();
        r.insert("ID".into(), id_str(&img.id, a.no_trunc));
        r.insert("CreatedSince".into(), ago(img.created, now));
        r.insert("Size".into(), human_size_prec(img.size(), 3));
        rows.push(r);
    }
    let cols = [
        ("IMAGE", "ID"),
        ("CREATED", "CreatedSince"),
        ("CREATED BY", "CreatedBy"),
        ("SIZE", "Size"),
        ("COMMENT", "Comment"),
    ];
    out(&render::listing(a.quiet, a.format.as_deref(), &cols, &rows))?;
    Ok(ExitCode::SUCCESS)
}

pub fn tag(a: TagArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    store.tag(&lock, &a.source, &a.target)?;
    Ok(ExitCode::SUCCESS)
}

fn print_events(events: &[RmiEvent]) -> anyhow::Result<()> {
    let s: String = events
        .iter()
        .map(|e| match e {
            RmiEvent::Untagged(t) => format!("Untagged: {t}\n"),
            RmiEvent::Deleted(d) => format!("Deleted: {d}\n"),
        })
        .collect();
    out(&s)
}

pub fn rmi(a: RmiArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    super::per_item::each_reporting_errors(&a.images, |name| {
        let r = store.remove_image(
            &lock,
            name,
            RmiOptions {
                force: a.force,
                no_prune: a.no_prune,
            },
        );
        Ok(match r {
            Ok(ev) => Ok(print_events(&ev)?),
            Err(e) => Err(e),
        })
    })
}

pub fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    // Scratch killed builds left is swept first, so its size is known.
    let scratch = store.sweep_scratch(&lock)?;
    let before: u64 = store.blob_sizes()?.values().sum();
    let ev = store.prune_images(&lock, a.all)?;
    let after: u64 = store.blob_sizes()?.values().sum();
    if !ev.is_empty() {
        out("Deleted Images:\n")?;
        print_events(&ev)?;
        out("\n")?;
    }
    if !scratch.entries.is_empty() {
        out(&format!(
            "Removed stale scratch: {} entries ({})\n",
            scratch.entries.len(),
            human_size(scratch.bytes())
        ))?;
    }
    out(&format!(
        "Total reclaimed space: {}\n",
        human_size(before.saturating_sub(after) + scratch.bytes())
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn diff(a: DiffArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lines = match &a.b {
        Some(b) => {
            let ia = store.resolve(&a.a)?;
            let ib = store.resolve(b)?;
            strata_store::diff_images(&store, &ia, &ib)?
        }
        None => match store.resolve(&a.a) {
            Ok(img) => strata_store::diff_top_layer(&store, &img)?,
            Err(strata_store::StoreError::NoSuchImage(_)) => {
                let c = store.resolve_container(&a.a)?;
                strata_store::diff_container(&store, &c)?
            }
            Err(e) => return Err(e.into()),
        },
    };
    out(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    Ok(ExitCode::SUCCESS)
}

pub fn save(a: SaveArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let mut chosen: Vec<(ImageRecord, Vec<String>)> = Vec::new();
    let tags = store.tags()?;
    for name in &a.images {
        let img = store.resolve(name)?;
        let norm = strata_store::normalize_reference(name)
            .ok()
            .filter(|n| tags.get(n) == Some(&img.id));
        match chosen.iter_mut().find(|(i, _)| i.id == img.id) {
            Some((_, t)) => t.extend(norm.filter(|n| !t.contains(n))),
            None => chosen.push((img, norm.into_iter().collect())),
        }
    }
    // Held until the archive is written: a concurrent `rmi` + `prune` then
    // frees nothing it reads.
    let _reading = store.lease_images(
        "save",
        chosen
            .iter()
            .zip(&a.images)
            .map(|((img, _), name)| (img, name.as_str())),
    )?;
    super::ship::ship_all(&store, &_reading, chosen.iter().map(|(i, _)| i))?;
    match &a.output {
        Some(p) => {
            let mut f = strata_oci::AtomicFile::create_shared(p)
                .with_context(|| format!("creating {}", p.display()))?;
            strata_store::save_archive(&store, &chosen, p, std::io::BufWriter::new(f.file()))?;
            // An export: atomic, not fsynced (as `docker save -o`).
            f.commit_unsynced()
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(UsageError(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                )
                .into());
            }
            strata_store::save_archive(
                &store,
                &chosen,
                std::path::Path::new("<stdout>"),
                std::io::stdout().lock(),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn load(a: LoadArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    let loaded = match &a.input {
        Some(p) => {
            let f = fs_open(p)?;
            strata_store::load_archive(&store, &lock, p, std::io::BufReader::new(f))?
        }
        None => strata_store::load_archive(
            &store,
            &lock,
            &PathBuf::from("<stdin>"),
            std::io::stdin().lock(),
        )?,
    };
    if !a.quiet {
        let mut s = String::new();
        for l in &loaded {
            if l.tags.is_empty() {
                s.push_str(&format!("Loaded image ID: {}\n", l.id));
            }
            for t in &l.tags {
                s.push_str(&format!("Loaded image: {}\n", familiar(t)));
            }
        }
        out(&s)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn fs_open(p: &std::path::Path) -> anyhow::Result<std::fs::File> {
    std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))
}

pub fn import(a: ImportArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    let img = strata_store::import_rootfs(
        &store,
        &lock,
        &a.tarball,
        strata_build::config::apply_changes(&serde_json::json!({}), &a.change)?,
        a.message.as_deref(),
        a.reference.as_deref(),
    )?;
    out(&format!("{}\n", img.id))?;
    Ok(ExitCode::SUCCESS)
}
