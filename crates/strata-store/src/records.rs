//! The records the database holds (images, layers, containers, build
//! cache, context metadata) and the reports operations return.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use strata_oci::Digest;

/// One layer of an image, as the image record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar (the config's rootfs.diff_ids entry).
    pub diff_id: Digest,
    /// Digest of the blob as stored (compressed or not).
    pub blob: Digest,
    pub media_type: String,
    /// Stored blob size.
    pub size: u64,
    /// Uncompressed tar size (what `images` SIZE adds up).
    pub uncompressed_size: u64,
    /// Set on a layer a build wrote: it is stored uncompressed (`blob` is
    /// the diffID) and shipped (manifests, exports, `save`, `push`,
    /// `--cache-to`) in this encoding, made the first time something ships
    /// it and kept as an [`EncodedLayer`] (see `Store::ship`). `None`: the
    /// layer is shipped as stored (pulled, loaded, imported layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ship_as: Option<strata_oci::Compression>,
}

impl LayerRecord {
    /// The record as it is shipped once its encoding `enc` exists: what
    /// manifests and cache exports name (and byte for byte what a build
    /// recorded before layers were kept uncompressed).
    pub fn shipped(&self, enc: &EncodedLayer) -> LayerRecord {
        let to = self.ship_as.unwrap_or_default();
        LayerRecord {
            diff_id: self.diff_id,
            blob: enc.blob,
            media_type: to.oci_layer_media_type().to_owned(),
            size: enc.size,
            uncompressed_size: self.uncompressed_size,
            ship_as: None,
        }
    }
}

/// A layer's blob in another encoding than the one it is stored in (made
/// by an export with `compression=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedLayer {
    pub diff_id: Digest,
    pub blob: Digest,
    pub size: u64,
}

/// An image: its config digest is its ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    pub id: Digest,
    pub manifest: Digest,
    pub manifest_size: u64,
    pub config_size: u64,
    pub layers: Vec<LayerRecord>,
    /// Seconds since the epoch, from the config's `created`.
    pub created: i64,
    /// The image this one was built or committed on top of (local only, like
    /// Docker's parent chain): keeps `prune` from removing a base still needed.
    #[serde(default)]
    pub parent: Option<Digest>,
    /// `registry/repo@sha256:…` names this image was pulled by (the index
    /// digest when the reference named a multi-platform index), as Docker's
    /// RepoDigests.
    #[serde(default)]
    pub repo_digests: Vec<String>,
}

impl ImageRecord {
    /// Sum of uncompressed layer sizes, the SIZE `docker images` shows.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed_size).sum()
    }

    /// ChainIDs of the layers, bottom first (what Docker prints on delete).
    pub fn chain_ids(&self) -> Vec<Digest> {
        let mut out: Vec<Digest> = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let next = match out.last() {
                None => l.diff_id,
                Some(prev) => Digest::of(format!("{prev} {}", l.diff_id).as_bytes()),
            };
            out.push(next);
        }
        out
    }
}

/// A container: an image plus a writable upper directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    pub image: Digest,
    /// What the user typed for the image (shown by `ps`).
    pub image_name: String,
    pub command: Vec<String>,
    /// The writable layer, under `root/containers/<id>`.
    pub upper: PathBuf,
    pub created: i64,
    /// `created`, `running`, `exited(N)`.
    pub state: String,
    /// The `strata run` process that owns a running container, so a
    /// container whose process was killed is seen to be dead, not "Up".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerProcess>,
}

/// A process, told apart from a later one with the same pid by its start
/// time (`/proc/PID/stat` field 22, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerProcess {
    pub pid: u32,
    pub start_ticks: u64,
}

impl OwnerProcess {
    /// This process.
    pub fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            pid,
            start_ticks: start_ticks(pid)?,
        })
    }

    /// Whether the process is still running (the same one, not a reused pid).
    pub fn is_alive(&self) -> bool {
        start_ticks(self.pid) == Some(self.start_ticks)
    }
}

fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields after its closing parenthesis. Field 3 is the state; a zombie
    // has exited.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

impl ContainerRecord {
    /// "running" whose owning process is gone: killed along with `strata run`.
    pub fn is_dead(&self) -> bool {
        self.state == "running" && self.owner.is_some_and(|o| !o.is_alive())
    }
}

/// A build cache record: opaque to the store except for what it pins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRecord {
    pub value: serde_json::Value,
    /// Layers this record needs kept.
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
    /// Blobs this record needs kept.
    #[serde(default)]
    pub blobs: Vec<Digest>,
    /// When a build last used (stored or hit) this record, Unix seconds:
    /// `builder prune --keep-storage` removes the least recently used first.
    #[serde(default)]
    pub last_used: i64,
}

/// Stat data the solver caches per context path, to skip rehashing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtxMeta {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    /// blake3 of the content, hex.
    pub blake3: String,
}

/// One line of `rmi` output, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmiEvent {
    Untagged(String),
    Deleted(Digest),
}

/// What `remove_image` may do.
#[derive(Debug, Clone, Copy, Default)]
pub struct RmiOptions {
    pub force: bool,
    pub no_prune: bool,
}

/// What garbage collection freed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: Vec<Digest>,
    /// Bytes of the removed blobs.
    pub bytes_freed: u64,
    pub snapshots_removed: usize,
    /// Bytes of the removed snapshots (allocated on disk).
    pub snapshot_bytes: u64,
    /// Leftover `.tmp-*` files of interrupted blob writes.
    pub temp_files_removed: usize,
    /// Stale scratch (see `scratch`) removed.
    pub scratch: crate::ScratchReport,
    /// Lease files of processes that died, removed.
    pub leases_removed: usize,
}

/// One thing `check` found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    /// Whether `--repair` fixed it.
    pub repaired: bool,
}

#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    pub blobs_checked: usize,
    pub images_checked: usize,
    /// Files nothing refers to (left by an interrupted write; not an error:
    /// GC frees them, as `--repair` does).
    pub unreferenced_blobs: usize,
    /// Scratch left by killed builds and runs (not an error either:
    /// the next build, `prune` and `--repair` remove it).
    pub stale_scratch: crate::ScratchReport,
    pub gc: Option<GcReport>,
}
