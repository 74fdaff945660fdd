//! Building image records from parts: the config and manifest blobs around a
//! list of layers, `import` of a root filesystem tar, and `commit`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Value, json};
use strata_oci::Digest;

use crate::{
    ImageRecord, LayerRecord, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
    Result, Store, StoreError, WriteLock, io_err, rfc3339,
};

/// The Go architecture name of this machine, as image configs use.
pub fn host_arch() -> &'static str {
    strata_oci::platform::host_architecture()
}

/// Default config of an image with no base.
pub fn empty_config(created: i64) -> Value {
    json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": rfc3339(created),
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    })
}

/// Writes the config and manifest for `layers` (whose blobs are stored) and
/// records the image under `tags`. `config` gets its rootfs filled in here.
pub fn write_image(
    store: &Store,
    lock: &WriteLock,
    mut config: Value,
    layers: Vec<LayerRecord>,
    parent: Option<Digest>,
    tags: &[String],
) -> Result<ImageRecord> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let created = config
        .get("created")
        .and_then(Value::as_str)
        .and_then(crate::parse_rfc3339)
        .unwrap_or(0);
    let cfg_bytes =
        serde_json::to_vec(&config).map_err(|e| StoreError::InvalidImage(e.to_string()))?;
    let id = store.put_blob_bytes(lock, &cfg_bytes)?;
    let manifest = manifest_json(&id, cfg_bytes.len() as u64, &layers);
    let man_bytes =
        serde_json::to_vec(&manifest).map_err(|e| StoreError::InvalidImage(e.to_string()))?;
    let man = store.put_blob_bytes(lock, &man_bytes)?;
    let img = ImageRecord {
        repo_digests: Vec::new(),
        id,
        manifest: man,
        manifest_size: man_bytes.len() as u64,
        config_size: cfg_bytes.len() as u64,
        layers,
        created,
        parent,
    };
    store.commit_image(lock, &img, tags)?;
    Ok(img)
}

pub(crate) fn manifest_json(config: &Digest, config_size: u64, layers: &[LayerRecord]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": config.to_string(), "size": config_size},
        "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.blob.to_string(), "size": l.size})).collect::<Vec<_>>(),
    })
}

/// Stores a layer tar (gzip or plain) as a blob; returns its layer record.
/// Plain tars are stored as they are (diffID = blob digest); gzip ones are
/// kept compressed and their diffID computed by decompressing once.
pub fn put_layer(store: &Store, lock: &WriteLock, reader: impl Read) -> Result<LayerRecord> {
    let tmpdir = store.root().join("tmp");
    let mut r = BufReader::new(reader);
    let head = r.fill_buf().map_err(io_err(&tmpdir))?;
    let media_type = if head.starts_with(&[0x1f, 0x8b]) {
        Some(MEDIA_LAYER_GZIP)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("application/vnd.oci.image.layer.v1.tar+zstd")
    } else {
        None
    };
    let (blob, size) = store.put_blob_reader(lock, r)?;
    let Some(media_type) = media_type else {
        return Ok(LayerRecord {
            diff_id: blob,
            blob,
            media_type: MEDIA_LAYER_TAR.into(),
            size,
            uncompressed_size: size,
            ship_as: None,
        });
    };
    let (diff_id, uncompressed_size) = gunzip_digest(&store.blob_path(&blob))?;
    Ok(LayerRecord {
        diff_id,
        blob,
        media_type: media_type.into(),
        size,
        uncompressed_size,
        ship_as: None,
    })
}

pub(crate) fn gunzip_digest(p: &Path) -> Result<(Digest, u64)> {
    let f = fs_err::File::open(p).map_err(io_err(p))?;
    let (_, tar) = strata_oci::compress::decompress(f).map_err(io_err(p))?;
    let mut r = strata_oci::DigestingReader::new(tar);
    std::io::copy(&mut r, &mut std::io::sink()).map_err(io_err(p))?;
    let (_, d, n) = r.finish();
    Ok((d, n))
}

/// The record of a layer whose blob is stored (a pulled one): its diffID and
/// uncompressed size come from decompressing it once.
pub fn layer_record_for_blob(
    store: &Store,
    blob: &Digest,
    size: u64,
    media_type: &str,
) -> Result<LayerRecord> {
    let (diff_id, uncompressed_size) = gunzip_digest(&store.blob_path(blob))?;
    Ok(LayerRecord {
        diff_id,
        blob: *blob,
        media_type: media_type.to_owned(),
        size,
        uncompressed_size,
        ship_as: None,
    })
}

/// `strata import`: a root filesystem tar (plain or gzip) becomes a
/// single-layer image, tagged `tag` if given. `container_config` is its
/// `config` object with any `--change` lines already applied (the store
/// does not read Dockerfile instructions); without an `Env` it gets the
/// default PATH.
pub fn import_rootfs(
    store: &Store,
    lock: &WriteLock,
    tar: &Path,
    container_config: Value,
    message: Option<&str>,
    tag: Option<&str>,
) -> Result<ImageRecord> {
    let tags = match tag {
        Some(t) => vec![crate::normalize_reference(t)?],
        None => Vec::new(),
    };
    let f = fs_err::File::open(tar).map_err(io_err(tar))?;
    let layer = put_layer(store, lock, f)?;
    // SOURCE_DATE_EPOCH (reproducible-builds.org) pins the date, so that two
    // imports of the same tar give the same image ID.
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(crate::now_unix);
    let mut config = empty_config(now);
    config["config"] = container_config;
    let cfg = config["config"].as_object_mut();
    if let Some(cfg) = cfg
        && !cfg.contains_key("Env")
    {
        cfg.insert(
            "Env".into(),
            json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]),
        );
    }
    let comment = message
        .map(str::to_owned)
        .unwrap_or_else(|| format!("Imported from {}", tar.display()));
    config["history"] = json!([{"created": rfc3339(now), "created_by": "", "comment": comment}]);
    write_image(store, lock, config, vec![layer], None, &tags)
}

/// `commit`: the container's writable layer (an uncompressed layer tar that
/// `strata run` wrote with `strata_oci::write_layer`) becomes a new top layer on its image, with a
/// history entry. `container_config`, when given, replaces the base's
/// `config` object (`--change` lines applied to it by the caller).
pub fn commit_container(
    store: &Store,
    lock: &WriteLock,
    c: &crate::ContainerRecord,
    container_config: Option<Value>,
    message: Option<&str>,
    author: Option<&str>,
    tag: Option<&str>,
) -> Result<ImageRecord> {
    let tags = match tag {
        Some(t) => vec![crate::normalize_reference(t)?],
        None => Vec::new(),
    };
    let base = store
        .get_image(&c.image)?
        .ok_or_else(|| StoreError::NoSuchImage(c.image.to_string()))?;
    let mut config = store.image_config(&base)?;
    let layer = if c.upper.is_file() {
        put_layer(
            store,
            lock,
            fs_err::File::open(&c.upper).map_err(io_err(&c.upper))?,
        )?
    } else {
        // A container that never ran has no changes: an empty tar (two zero blocks).
        put_layer(store, lock, &[0u8; 1024][..])?
    };
    let now = crate::now_unix();
    config["created"] = json!(rfc3339(now));
    if let Some(a) = author {
        config["author"] = json!(a);
    }
    if let Some(cc) = container_config {
        config["config"] = cc;
    }
    let mut entry = json!({"created": rfc3339(now), "created_by": c.command.join(" ")});
    if let Some(a) = author {
        entry["author"] = json!(a);
    }
    if let Some(m) = message {
        entry["comment"] = json!(m);
    }
    match config["history"].as_array_mut() {
        Some(h) => h.push(entry),
        None => config["history"] = json!([entry]),
    }
    let mut layers = base.layers.clone();
    layers.push(layer);
    write_image(store, lock, config, layers, Some(base.id), &tags)
}
