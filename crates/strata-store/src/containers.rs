//! Container records: their writable directories and what they pin.

use std::path::PathBuf;

use redb::ReadableTable;
use strata_oci::Digest;

use crate::db::*;
use crate::records::*;
use crate::*;

impl Store {
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        self.read(|txn| {
            let t = txn.open_table(CONTAINERS)?;
            let mut out = Vec::new();
            for e in t.iter()? {
                let (k, v) = e?;
                out.push(from_json::<ContainerRecord>(
                    "containers",
                    k.value(),
                    v.value(),
                )?);
            }
            out.sort_by_key(|c| std::cmp::Reverse(c.created));
            Ok(out)
        })
    }

    /// Directory for a new container's writable layer.
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// Adds or updates a container record (its image must exist).
    pub fn put_container(&self, _lock: &WriteLock, c: &ContainerRecord) -> Result<()> {
        let rec = to_json(c)?;
        self.write(|txn| {
            let imgs = txn.open_table(IMAGES)?;
            if imgs.get(c.image.to_string().as_str())?.is_none() {
                return Err(StoreError::NoSuchImage(c.image.to_string()).into());
            }
            let mut t = txn.open_table(CONTAINERS)?;
            for e in t.iter()? {
                let (k, v) = e?;
                let other: ContainerRecord = from_json("containers", k.value(), v.value())?;
                if other.name == c.name && other.id != c.id {
                    return Err(StoreError::Conflict(format!(
                        "Conflict. The container name \"/{}\" is already in use by container \"{}\"",
                        c.name, other.id
                    ))
                    .into());
                }
            }
            t.insert(c.id.as_str(), rec.as_str())?;
            Ok(())
        })
    }

    /// Finds a container by name, full ID or unique ID prefix.
    pub fn resolve_container(&self, name: &str) -> Result<ContainerRecord> {
        let all = self.containers()?;
        if let Some(c) = all.iter().find(|c| c.name == name || c.id == name) {
            return Ok(c.clone());
        }
        let m: Vec<_> = all
            .iter()
            .filter(|c| !name.is_empty() && c.id.starts_with(name))
            .collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(StoreError::NoSuchContainer(name.to_owned())),
            _ => Err(StoreError::Conflict(format!(
                "multiple containers match {name}"
            ))),
        }
    }

    /// Removes a container record, then its writable layer.
    pub fn remove_container(&self, lock: &WriteLock, id: &str) -> Result<()> {
        self.write(|txn| {
            let mut t = txn.open_table(CONTAINERS)?;
            if t.remove(id)?.is_none() {
                return Err(StoreError::NoSuchContainer(id.to_owned()).into());
            }
            Ok(())
        })?;
        self.gc(lock)?;
        Ok(())
    }
}

pub(crate) fn container_users(
    t: &impl ReadableTable<&'static str, &'static str>,
    id: &Digest,
) -> Result<Vec<String>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        let c: ContainerRecord = from_json("containers", k.value(), v.value())?;
        if c.image == *id {
            out.push(c.id);
        }
    }
    Ok(out)
}
