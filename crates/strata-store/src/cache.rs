//! The build cache (records pinning layers and blobs, least recently used
//! first out), the context metadata cache, and layers re-encoded for
//! exports.

use std::collections::HashMap;

use redb::ReadableTable;
use strata_oci::Digest;

use crate::db::*;
use crate::records::*;
use crate::*;

impl Store {
    /// The blob of layer `diff_id` encoded as `encoding`, if an earlier
    /// export made it and it is still stored.
    pub fn layer_encoding(
        &self,
        diff_id: &Digest,
        encoding: strata_oci::Compression,
    ) -> Result<Option<EncodedLayer>> {
        let key = encoding_key(diff_id, encoding);
        let rec: Option<EncodedLayer> = self.read(|txn| {
            let t = txn.open_table(LAYER_ENCODINGS)?;
            match t.get(key.as_str())? {
                Some(v) => Ok(Some(from_json("layer_encodings", &key, v.value())?)),
                None => Ok(None),
            }
        })?;
        Ok(rec.filter(|r| self.has_blob(&r.blob)))
    }

    /// Remembers a re-encoded layer whose blob is already stored. It lives
    /// as long as the layer does: GC drops it with the last image or cache
    /// record that needs `diff_id`.
    pub fn put_layer_encoding(
        &self,
        _lock: &WriteLock,
        encoding: strata_oci::Compression,
        rec: &EncodedLayer,
    ) -> Result<()> {
        if !self.has_blob(&rec.blob) {
            return Err(StoreError::MissingBlob { digest: rec.blob });
        }
        let key = encoding_key(&rec.diff_id, encoding);
        let v = to_json(rec)?;
        self.write(|txn| {
            txn.open_table(LAYER_ENCODINGS)?
                .insert(key.as_str(), v.as_str())?;
            Ok(())
        })
    }
}

impl Store {
    pub fn cache_get(&self, key: &str) -> Result<Option<CacheRecord>> {
        self.read(|txn| {
            let t = txn.open_table(CACHE)?;
            match t.get(key)? {
                Some(v) => Ok(Some(from_json("build_cache", key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Stores a cache record; the blobs it pins must already be stored.
    pub fn cache_put(&self, _lock: &WriteLock, key: &str, rec: &CacheRecord) -> Result<()> {
        for b in &rec.blobs {
            if !self.has_blob(b) {
                return Err(StoreError::MissingBlob { digest: *b });
            }
        }
        let v = to_json(rec)?;
        self.write(|txn| {
            txn.open_table(CACHE)?.insert(key, v.as_str())?;
            Ok(())
        })
    }

    /// Removes a cache record (GC frees what it alone pinned).
    /// Marks records as used now (one transaction for a build's hits).
    pub fn cache_touch(&self, _lock: &WriteLock, keys: &[String], now: i64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        self.write(|txn| {
            let mut t = txn.open_table(CACHE)?;
            for k in keys {
                let rec = match t.get(k.as_str())? {
                    Some(v) => Some(from_json::<CacheRecord>("build_cache", k, v.value())?),
                    None => None,
                };
                if let Some(mut rec) = rec {
                    rec.last_used = now;
                    t.insert(k.as_str(), to_json(&rec)?.as_str())?;
                }
            }
            Ok(())
        })
    }

    pub fn cache_remove(&self, _lock: &WriteLock, key: &str) -> Result<bool> {
        self.write(|txn| Ok(txn.open_table(CACHE)?.remove(key)?.is_some()))
    }

    pub fn cache_list(&self) -> Result<Vec<(String, CacheRecord)>> {
        self.read(|txn| {
            let t = txn.open_table(CACHE)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                out.push((
                    k.value().to_owned(),
                    from_json("build_cache", k.value(), v.value())?,
                ));
            }
            Ok(out)
        })
    }

    pub fn ctx_meta_get(&self, key: &str) -> Result<Option<CtxMeta>> {
        self.read(|txn| {
            let t = txn.open_table(CTX_META)?;
            match t.get(key)? {
                Some(v) => Ok(Some(from_json("context_meta", key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Every entry whose key (an absolute path) starts with `prefix`.
    pub fn ctx_meta_prefix(&self, prefix: &str) -> Result<HashMap<String, CtxMeta>> {
        self.read(|txn| {
            let t = txn.open_table(CTX_META)?;
            let mut out = HashMap::new();
            for e in t.range(prefix..)? {
                let (k, v) = e?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.insert(
                    k.value().to_owned(),
                    from_json("context_meta", k.value(), v.value())?,
                );
            }
            Ok(out)
        })
    }

    /// Writes many entries in one transaction (metadata only: no lock needed).
    pub fn ctx_meta_put_batch(&self, entries: &[(String, CtxMeta)]) -> Result<()> {
        self.write(|txn| {
            let mut t = txn.open_table(CTX_META)?;
            for (k, m) in entries {
                t.insert(k.as_str(), to_json(m)?.as_str())?;
            }
            Ok(())
        })
    }
}

pub(crate) fn encoding_key(diff_id: &Digest, encoding: strata_oci::Compression) -> String {
    match encoding {
        strata_oci::Compression::Gzip { level } => format!("{diff_id} gzip-{level}"),
        strata_oci::Compression::Zstd { level } => format!("{diff_id} zstd-{level}"),
        strata_oci::Compression::Uncompressed => format!("{diff_id} uncompressed"),
    }
}
