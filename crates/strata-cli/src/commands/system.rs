//! Store housekeeping: `check`, `builder prune` and `system df/prune`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use strata_oci::Digest;
use strata_store::{familiar, split_repo_tag};

use super::image::{PruneArgs, out, prune};
use super::store::open_store;
use crate::render::{self, Format, ago, human_size};

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
    // Reported before --repair's GC removes it, so the user sees what it was.
    if !r.stale_scratch.entries.is_empty() {
        s.push_str(&format!(
            "stale scratch left by interrupted builds or runs: {} ({}){}\n",
            scratch_kinds(&r.stale_scratch),
            human_size(r.stale_scratch.bytes()),
            if a.repair {
                ""
            } else {
                "; the next build, `prune` or `check --repair` removes it"
            }
        ));
    }
    if let Some(gc) = &r.gc {
        s.push_str(&format!("freed {}\n", freed_summary(gc)));
    }
    out(&s)?;
    Ok(if r.problems.is_empty() || a.repair {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::EXIT_FAILURE)
    })
}

/// "3 build dir(s), 1 container step": how many of each kind.
fn scratch_kinds(r: &strata_store::ScratchReport) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &r.entries {
        *kinds.entry(e.kind.as_str()).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{n} {k} {}", if *n == 1 { "entry" } else { "entries" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a GC removed, by kind, with the bytes each took and the total.
pub(super) fn freed_summary(gc: &strata_store::GcReport) -> String {
    let mut parts = vec![format!(
        "{} blob(s) {}",
        gc.blobs_removed.len(),
        human_size(gc.bytes_freed)
    )];
    if gc.snapshots_removed > 0 {
        parts.push(format!(
            "{} snapshot(s) {}",
            gc.snapshots_removed,
            human_size(gc.snapshot_bytes)
        ));
    }
    if !gc.scratch.entries.is_empty() {
        parts.push(format!(
            "scratch: {} {}",
            scratch_kinds(&gc.scratch),
            human_size(gc.scratch.bytes())
        ));
    }
    if gc.temp_files_removed > 0 {
        parts.push(format!(
            "{} unfinished blob write(s)",
            gc.temp_files_removed
        ));
    }
    let total = gc.bytes_freed + gc.snapshot_bytes + gc.scratch.bytes();
    format!("{}: {} in all", parts.join(", "), human_size(total))
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
            crate::exit::UsageError(format!(
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
    let gc = store.gc(&lock)?;
    let after: u64 = store.blob_sizes()?.values().sum();
    // Scratch killed builds left is build space too: counted in the total.
    let scratch = gc.scratch.bytes();
    let mut s = format!(
        "Deleted build cache records: {removed}\nRemaining build cache: {}\n",
        human_size(cache_size)
    );
    if !gc.scratch.entries.is_empty() {
        s.push_str(&format!(
            "Removed stale scratch: {} ({})\n",
            scratch_kinds(&gc.scratch),
            human_size(scratch)
        ));
    }
    s.push_str(&format!(
        "Total:\t{}\n",
        human_size(before.saturating_sub(after) + gc.snapshot_bytes + scratch)
    ));
    out(&s)?;
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

/// Entries of `tmp/` (owner locks aside) that are not stale: scratch of
/// builds running now, and the bytes they take.
fn live_scratch(store: &strata_store::Store, stale: &strata_store::ScratchReport) -> (usize, u64) {
    let tmp = store.root().join("tmp");
    let mut n = 0;
    let mut bytes = 0;
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().ends_with(".lock")
                || stale.entries.iter().any(|s| s.path == p)
            {
                continue;
            }
            n += 1;
            bytes += strata_store::disk_usage(&p);
        }
    }
    (n, bytes)
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
    // Not a Docker row: scratch space of builds running now (active) and
    // what killed builds and runs left (all of it reclaimable).
    let stale = store.stale_scratch()?;
    let (live_n, live_bytes) = live_scratch(&store, &stale);
    row(
        "Build Scratch",
        live_n + stale.entries.len(),
        live_n,
        live_bytes + stale.bytes(),
        stale.bytes(),
    );
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
