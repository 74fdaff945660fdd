//! Building image records from parts: the config and manifest blobs around a
//! list of layers, `import` of a root filesystem tar, and `--change` lines.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Value, json};
use strata_oci::Digest;

use crate::{
    ImageRecord, LayerRecord, MEDIA_CONFIG, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_MANIFEST,
    Result, Store, StoreError, WriteLock, io_err, rfc3339,
};

/// Dockerfile-style lines applied to an imported image's config
/// (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `USER`, `EXPOSE`, `VOLUME`,
/// `LABEL`, `STOPSIGNAL`, `ONBUILD`: the set `docker import --change` takes).
#[derive(Debug, Clone, Default)]
pub struct ConfigChanges(pub Vec<String>);

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

/// Applies one `--change` / commit `-c` line to `config["config"]`.
pub fn apply_change(config: &mut Value, line: &str) -> Result<()> {
    let bad = |m: &str| StoreError::InvalidImage(format!("{line}: {m}"));
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let cfg = config
        .as_object_mut()
        .ok_or_else(|| bad("config is not an object"))?
        .entry("config")
        .or_insert_with(|| json!({}));
    let cfg = cfg
        .as_object_mut()
        .ok_or_else(|| bad("config.config is not an object"))?;
    let exec_form = |rest: &str| -> Result<Value> {
        if rest.starts_with('[')
            && let Ok(v) = serde_json::from_str::<Vec<String>>(rest)
        {
            return Ok(json!(v));
        }
        Ok(json!(["/bin/sh", "-c", rest]))
    };
    match word.to_ascii_uppercase().as_str() {
        "CMD" => {
            cfg.insert("Cmd".into(), exec_form(rest)?);
        }
        "ENTRYPOINT" => {
            cfg.insert("Entrypoint".into(), exec_form(rest)?);
        }
        "WORKDIR" => {
            cfg.insert("WorkingDir".into(), json!(rest));
        }
        "USER" => {
            cfg.insert("User".into(), json!(rest));
        }
        "STOPSIGNAL" => {
            cfg.insert("StopSignal".into(), json!(rest));
        }
        "ONBUILD" => {
            let v = cfg.entry("OnBuild").or_insert_with(|| json!([]));
            if let Some(a) = v.as_array_mut() {
                a.push(json!(rest));
            }
        }
        "ENV" => {
            let pairs = key_values(rest).ok_or_else(|| bad("expected KEY=VALUE"))?;
            let env = cfg.entry("Env").or_insert_with(|| json!([]));
            let arr = env.as_array_mut().ok_or_else(|| bad("Env is not a list"))?;
            for (k, v) in pairs {
                arr.retain(|e| {
                    e.as_str()
                        .and_then(|s| s.split_once('='))
                        .map(|(ek, _)| ek != k)
                        .unwrap_or(true)
                });
                arr.push(json!(format!("{k}={v}")));
            }
        }
        "LABEL" => {
            let pairs = key_values(rest).ok_or_else(|| bad("expected KEY=VALUE"))?;
            let l = cfg.entry("Labels").or_insert_with(|| json!({}));
            let obj = l
                .as_object_mut()
                .ok_or_else(|| bad("Labels is not an object"))?;
            for (k, v) in pairs {
                obj.insert(k, json!(v));
            }
        }
        "EXPOSE" | "VOLUME" => {
            let key = if word.eq_ignore_ascii_case("EXPOSE") {
                "ExposedPorts"
            } else {
                "Volumes"
            };
            let items: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|_| bad("invalid JSON list"))?
            } else {
                rest.split_whitespace().map(str::to_owned).collect()
            };
            let m = cfg.entry(key).or_insert_with(|| json!({}));
            let obj = m.as_object_mut().ok_or_else(|| bad("not an object"))?;
            for mut i in items {
                if key == "ExposedPorts" && !i.contains('/') {
                    i.push_str("/tcp");
                }
                obj.insert(i, json!({}));
            }
        }
        _ => {
            return Err(bad(
                "unsupported instruction (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)",
            ));
        }
    }
    Ok(())
}

/// `K=V K2="v 2"` or the legacy `K V` form.
fn key_values(s: &str) -> Option<Vec<(String, String)>> {
    if !s.contains('=') {
        let (k, v) = s.split_once(char::is_whitespace)?;
        return Some(vec![(k.to_owned(), v.trim().to_owned())]);
    }
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut k = String::new();
        for c in chars.by_ref() {
            if c == '=' {
                break;
            }
            k.push(c);
        }
        let mut v = String::new();
        let mut quote = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, c) if c.is_whitespace() => break,
                (_, '\\') => {
                    chars.next();
                    if let Some(n) = chars.next() {
                        v.push(n);
                    }
                    continue;
                }
                _ => v.push(c),
            }
            chars.next();
        }
        if k.is_empty() {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
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
        });
    };
    let (diff_id, uncompressed_size) = gunzip_digest(&store.blob_path(&blob))?;
    Ok(LayerRecord {
        diff_id,
        blob,
        media_type: media_type.into(),
        size,
        uncompressed_size,
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
    })
}

/// `strata import`: a root filesystem tar (plain or gzip) becomes a
/// single-layer image with `changes` applied, tagged `tag` if given.
pub fn import_rootfs(
    store: &Store,
    lock: &WriteLock,
    tar: &Path,
    changes: &ConfigChanges,
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
    for c in &changes.0 {
        apply_change(&mut config, c)?;
    }
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

/// `commit`: the container's writable layer (a layer tar, see
/// [`crate::write_changes_tar`]) becomes a new top layer on its image, with a
/// history entry; `changes` are applied to the config.
pub fn commit_container(
    store: &Store,
    lock: &WriteLock,
    c: &crate::ContainerRecord,
    changes: &ConfigChanges,
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
    for ch in &changes.0 {
        apply_change(&mut config, ch)?;
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
