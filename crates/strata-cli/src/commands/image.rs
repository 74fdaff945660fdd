//! Everyday image commands on the local store: `images`, `inspect`,
//! `history`, `tag`, `rmi`, `image prune`, `system df`, `diff`, `save`,
//! `load`, `import`, `check` and `builder prune`, with Docker's output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};
use strata_oci::Digest;
use strata_store::{ImageRecord, RmiEvent, RmiOptions, Store, familiar, split_repo_tag};

use crate::UsageError;
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

#[derive(clap::Args)]
pub struct CheckArgs {
    /// Remove what is broken
    #[arg(long)]
    pub repair: bool,
}

#[derive(clap::Subcommand)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune {
        /// Remove all build cache (the default too: strata keeps no internal images)
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation (strata never prompts)
        #[arg(short, long)]
        force: bool,
        /// Keep this much build cache, removing the least recently used first (`512MB`, `2GB`)
        #[arg(long, value_name = "SIZE")]
        keep_storage: Option<String>,
    },
}

#[derive(clap::Subcommand)]
pub enum SystemCommand {
    /// Show disk usage
    Df {
        /// Show detailed information on space usage
        #[arg(short, long)]
        verbose: bool,
        /// Format output: table, json, or a template
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove unused data
    Prune(PruneArgs),
}

pub(crate) fn open_store() -> anyhow::Result<Store> {
    let root = Store::default_root();
    Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))
}

fn out(s: &str) -> anyhow::Result<()> {
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
            r.insert("Digest".to_owned(), img.manifest.to_string());
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
    let repo_digests: Vec<String> = tags
        .iter()
        .map(|t| format!("{}@{}", split_repo_tag(&familiar(t)).0, img.manifest))
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
        ExitCode::from(crate::EXIT_FAILURE)
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
    if a.quiet {
        out(&rows
            .iter()
            .map(|r| r["ID"].clone() + "\n")
            .collect::<String>())?;
        return Ok(ExitCode::SUCCESS);
    }
    let cols = [
        ("IMAGE", "ID"),
        ("CREATED", "CreatedSince"),
        ("CREATED BY", "CreatedBy"),
        ("SIZE", "Size"),
        ("COMMENT", "Comment"),
    ];
    out(&render::render(
        &Format::parse(a.format.as_deref()),
        &cols,
        &rows,
    ))?;
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
    let mut failed = false;
    for name in &a.images {
        match store.remove_image(
            &lock,
            name,
            RmiOptions {
                force: a.force,
                no_prune: a.no_prune,
            },
        ) {
            Ok(ev) => print_events(&ev)?,
            Err(e) => {
                #[expect(
                    clippy::print_stderr,
                    reason = "per-image errors, as docker prints them"
                )]
                {
                    eprintln!("Error response from daemon: {e}");
                }
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(crate::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn prune(a: PruneArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    let before: u64 = store.blob_sizes()?.values().sum();
    let ev = store.prune_images(&lock, a.all)?;
    let after: u64 = store.blob_sizes()?.values().sum();
    if !ev.is_empty() {
        out("Deleted Images:\n")?;
        print_events(&ev)?;
        out("\n")?;
    }
    out(&format!(
        "Total reclaimed space: {}\n",
        human_size(before.saturating_sub(after))
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
    match &a.output {
        Some(p) => {
            let mut f = strata_oci::AtomicFile::create_shared(p)
                .with_context(|| format!("creating {}", p.display()))?;
            strata_store::save_archive(&store, &chosen, std::io::BufWriter::new(f.file()))?;
            f.commit()
                .with_context(|| format!("writing {}", p.display()))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(UsageError(
                    "cowardly refusing to save to a terminal. Use the -o flag or redirect".into(),
                )
                .into());
            }
            strata_store::save_archive(&store, &chosen, std::io::stdout().lock())?;
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
        &strata_store::ConfigChanges(a.change.clone()),
        a.message.as_deref(),
        a.reference.as_deref(),
    )?;
    out(&format!("{}\n", img.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn check(a: CheckArgs) -> anyhow::Result<ExitCode> {
    let store = open_store()?;
    let lock = store.lock()?;
    let r = store.check(&lock, a.repair)?;
    let mut s = String::new();
    for p in &r.problems {
        s.push_str(&format!(
            "{}{}\n",
            p.what,
            if p.repaired { " (removed)" } else { "" }
        ));
    }
    s.push_str(&format!(
        "checked {} blobs and {} images: {} problem(s), {} unreferenced blob(s)\n",
        r.blobs_checked,
        r.images_checked,
        r.problems.len(),
        r.unreferenced_blobs
    ));
    if let Some(gc) = &r.gc {
        s.push_str(&format!(
            "freed {} blob(s), {}\n",
            gc.blobs_removed.len(),
            human_size(gc.bytes_freed)
        ));
    }
    out(&s)?;
    Ok(if r.problems.is_empty() || a.repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_FAILURE)
    })
}

/// `512MB`, `2GB`, `1.5gb`, `100k`, plain bytes; decimal units as Docker's
/// go-units `FromHumanSize` (kB = 1000).
fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit.trim().trim_end_matches('b') {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "t" => 1e12,
        _ => return None,
    };
    (n >= 0.0).then_some((n * mult) as u64)
}

pub fn builder(c: BuilderCommand) -> anyhow::Result<ExitCode> {
    let BuilderCommand::Prune { keep_storage, .. } = c;
    let keep = match keep_storage.as_deref() {
        None => 0,
        Some(k) => parse_size(k).ok_or_else(|| {
            crate::UsageError(format!(
                "--keep-storage {k}: expected a size such as 512MB or 2GB"
            ))
        })?,
    };
    let store = open_store()?;
    let lock = store.lock()?;
    let sizes = store.blob_sizes()?;
    let before: u64 = sizes.values().sum();
    // Blobs images need stay whatever the cache does; the cache's own size is
    // what only cache records keep alive.
    let mut image_blobs = std::collections::HashSet::new();
    for (img, _) in store.images()? {
        image_blobs.insert(img.id);
        image_blobs.insert(img.manifest);
        image_blobs.extend(img.layers.iter().map(|l| l.blob));
    }
    let mut records = store.cache_list()?;
    let mut refs: std::collections::HashMap<strata_oci::Digest, usize> = Default::default();
    for (_, r) in &records {
        for b in &r.blobs {
            *refs.entry(*b).or_default() += 1;
        }
    }
    let mut cache_size: u64 = refs
        .keys()
        .filter(|b| !image_blobs.contains(*b))
        .map(|b| sizes.get(b).copied().unwrap_or(0))
        .sum();
    // Least recently used first; ties by key for a stable order.
    records.sort_by(|a, b| a.1.last_used.cmp(&b.1.last_used).then(a.0.cmp(&b.0)));
    let mut removed = 0usize;
    for (k, r) in &records {
        if keep > 0 && cache_size <= keep {
            break;
        }
        store.cache_remove(&lock, k)?;
        removed += 1;
        for b in &r.blobs {
            let n = refs.entry(*b).or_default();
            *n = n.saturating_sub(1);
            if *n == 0 && !image_blobs.contains(b) {
                cache_size = cache_size.saturating_sub(sizes.get(b).copied().unwrap_or(0));
            }
        }
    }
    store.gc(&lock)?;
    let after: u64 = store.blob_sizes()?.values().sum();
    out(&format!(
        "Deleted build cache records: {removed}\nRemaining build cache: {}\nTotal:\t{}\n",
        human_size(cache_size),
        human_size(before.saturating_sub(after))
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn dir_size(p: &std::path::Path) -> u64 {
    // symlink_metadata: never follow links out of a container's layer.
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

pub fn system(c: SystemCommand) -> anyhow::Result<ExitCode> {
    let (verbose, format) = match c {
        SystemCommand::Prune(a) => return prune(a),
        SystemCommand::Df { verbose, format } => (verbose, format),
    };
    let store = open_store()?;
    let images = store.images()?;
    let containers = store.containers()?;
    let cache = store.cache_list()?;
    let used_by_ctr: BTreeSet<Digest> = containers.iter().map(|c| c.image).collect();
    // Layer -> (size, images using it). Shared layers count once.
    let mut layer_users: BTreeMap<Digest, (u64, BTreeSet<Digest>)> = BTreeMap::new();
    for (img, _) in &images {
        for l in &img.layers {
            layer_users
                .entry(l.diff_id)
                .or_insert((l.uncompressed_size, BTreeSet::new()))
                .1
                .insert(img.id);
        }
    }
    let total: u64 = layer_users.values().map(|v| v.0).sum();
    let keep: BTreeSet<Digest> = images
        .iter()
        .filter(|(i, t)| !t.is_empty() || used_by_ctr.contains(&i.id))
        .map(|(i, _)| i.id)
        .collect();
    let reclaimable: u64 = layer_users
        .values()
        .filter(|(_, u)| u.is_disjoint(&keep))
        .map(|v| v.0)
        .sum();
    let active_images = images
        .iter()
        .filter(|(i, _)| used_by_ctr.contains(&i.id))
        .count();
    let ctr_sizes: Vec<u64> = containers.iter().map(|c| dir_size(&c.upper)).collect();
    let ctr_total: u64 = ctr_sizes.iter().sum();
    let running = containers.iter().filter(|c| c.state == "running").count();
    let ctr_reclaim: u64 = containers
        .iter()
        .zip(&ctr_sizes)
        .filter(|(c, _)| c.state != "running")
        .map(|(_, s)| *s)
        .sum();
    let image_layers: BTreeSet<Digest> = layer_users.keys().copied().collect();
    let blob_sizes = store.blob_sizes()?;
    let mut cache_blobs = BTreeSet::new();
    for (_, r) in &cache {
        cache_blobs.extend(r.blobs.iter().copied());
        let _ = &image_layers;
    }
    let image_blobs: BTreeSet<Digest> = images
        .iter()
        .flat_map(|(i, _)| i.layers.iter().map(|l| l.blob))
        .collect();
    let cache_size: u64 = cache_blobs
        .iter()
        .filter(|b| !image_blobs.contains(b))
        .filter_map(|b| blob_sizes.get(b))
        .sum();
    let pct = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let mut rows = Vec::new();
    let mut row = |t: &str, tot: usize, act: usize, size: u64, rec: u64| {
        let mut r = BTreeMap::new();
        r.insert("Type".to_owned(), t.to_owned());
        r.insert("TotalCount".to_owned(), tot.to_string());
        r.insert("Active".to_owned(), act.to_string());
        r.insert("Size".to_owned(), human_size(size));
        let rec_s = if size > 0 {
            format!("{} ({}%)", human_size(rec), pct(rec, size))
        } else {
            human_size(rec)
        };
        r.insert("Reclaimable".to_owned(), rec_s);
        rows.push(r);
    };
    row("Images", images.len(), active_images, total, reclaimable);
    row(
        "Containers",
        containers.len(),
        running,
        ctr_total,
        ctr_reclaim,
    );
    row("Local Volumes", 0, 0, 0, 0);
    row("Build Cache", cache.len(), 0, cache_size, cache_size);
    let cols = [
        ("TYPE", "Type"),
        ("TOTAL", "TotalCount"),
        ("ACTIVE", "Active"),
        ("SIZE", "Size"),
        ("RECLAIMABLE", "Reclaimable"),
    ];
    let fmt = Format::parse(format.as_deref());
    if !verbose {
        out(&render::render(&fmt, &cols, &rows))?;
        return Ok(ExitCode::SUCCESS);
    }
    let now = strata_store::now_unix();
    let mut irows = Vec::new();
    for (img, tags) in &images {
        let shared: u64 = img
            .layers
            .iter()
            .filter(|l| layer_users.get(&l.diff_id).is_some_and(|u| u.1.len() > 1))
            .map(|l| l.uncompressed_size)
            .sum();
        let size = img.size();
        let names: Vec<Option<&String>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.iter().map(Some).collect()
        };
        for t in names {
            let (repo, tag) = t
                .map(|t| split_repo_tag(&familiar(t)))
                .unwrap_or(("<none>".into(), "<none>".into()));
            irows.push(vec![
                repo,
                tag,
                img.id.short(),
                ago(img.created, now),
                human_size(size),
                human_size(shared),
                human_size(size - shared),
                containers
                    .iter()
                    .filter(|c| c.image == img.id)
                    .count()
                    .to_string(),
            ]);
        }
    }
    let mut s = String::from("Images space usage:\n\n");
    s.push_str(&render::table(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ],
        &irows,
    ));
    s.push_str("\nContainers space usage:\n\n");
    let crow: Vec<Vec<String>> = containers
        .iter()
        .zip(&ctr_sizes)
        .map(|(c, sz)| {
            vec![
                c.id[..12.min(c.id.len())].to_owned(),
                c.image_name.clone(),
                format!("\"{}\"", c.command.join(" ")),
                "0".into(),
                human_size(*sz),
                ago(c.created, now),
                c.state.clone(),
                c.name.clone(),
            ]
        })
        .collect();
    s.push_str(&render::table(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "LOCAL VOLUMES",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        &crow,
    ));
    s.push_str(
        "\nLocal Volumes space usage:\n\nVOLUME NAME   LINKS     SIZE\n\nBuild cache usage: ",
    );
    s.push_str(&human_size(cache_size));
    s.push('\n');
    out(&s)?;
    Ok(ExitCode::SUCCESS)
}
