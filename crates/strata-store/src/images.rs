//! Image records and tags: commit, list, resolve a name (tag, ID, prefix,
//! digest), tag, remove (`rmi`) and prune.

use std::collections::{BTreeMap, BTreeSet};

use redb::ReadableTable;
use strata_oci::Digest;

use crate::containers::container_users;
use crate::db::*;
use crate::gc::prune_layer_table;
use crate::records::*;
use crate::*;

impl Store {
    /// Records an image whose blobs are all stored, and points `tags`
    /// (normalised) at it, in one transaction. Returns the IDs of images that
    /// lost their last tag to this (now dangling).
    pub fn commit_image(
        &self,
        _lock: &WriteLock,
        img: &ImageRecord,
        tags: &[String],
    ) -> Result<Vec<Digest>> {
        for d in [img.id, img.manifest]
            .iter()
            .chain(img.layers.iter().map(|l| &l.blob))
        {
            if !self.has_blob(d) {
                return Err(StoreError::MissingBlob { digest: *d });
            }
        }
        let rec = to_json(img)?;
        self.write(|txn| {
            let mut images = txn.open_table(IMAGES)?;
            let mut layers = txn.open_table(LAYERS)?;
            let mut tagt = txn.open_table(TAGS)?;
            for l in &img.layers {
                layers.insert(l.diff_id.to_string().as_str(), to_json(l)?.as_str())?;
            }
            images.insert(img.id.to_string().as_str(), rec.as_str())?;
            let mut previous = Vec::new();
            for t in tags {
                let old = tagt
                    .insert(t.as_str(), img.id.to_string().as_str())?
                    .map(|g| g.value().to_owned());
                if let Some(old) = old.filter(|o| *o != img.id.to_string()) {
                    previous.push(old);
                }
            }
            drop(tagt);
            let tagt = txn.open_table(TAGS)?;
            let mut dangling = Vec::new();
            for old in previous {
                let still = tagt
                    .iter()?
                    .any(|e| e.map(|(_, v)| v.value() == old).unwrap_or(true));
                if !still && let Ok(d) = old.parse::<Digest>() {
                    dangling.push(d);
                }
            }
            Ok(dangling)
        })
    }

    /// Every image with its (familiar) tags, newest first.
    pub fn images(&self) -> Result<Vec<(ImageRecord, Vec<String>)>> {
        self.read(|txn| {
            let images = txn.open_table(IMAGES)?;
            let tags = txn.open_table(TAGS)?;
            let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for e in tags.iter()? {
                let (k, v) = e?;
                by_id
                    .entry(v.value().to_owned())
                    .or_default()
                    .push(k.value().to_owned());
            }
            let mut out = Vec::new();
            for e in images.iter()? {
                let (k, v) = e?;
                let rec: ImageRecord = from_json("images", k.value(), v.value())?;
                let t = by_id.remove(k.value()).unwrap_or_default();
                out.push((rec, t));
            }
            out.sort_by(|a, b| b.0.created.cmp(&a.0.created).then(a.0.id.cmp(&b.0.id)));
            Ok(out)
        })
    }

    /// All tags: normalised reference -> image ID.
    pub fn tags(&self) -> Result<BTreeMap<String, Digest>> {
        self.read(|txn| {
            let t = txn.open_table(TAGS)?;
            let mut out = BTreeMap::new();
            for e in t.iter()? {
                let (k, v) = e?;
                let d = parse_digest("tags", k.value(), v.value())?;
                out.insert(k.value().to_owned(), d);
            }
            Ok(out)
        })
    }

    pub fn get_image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
        self.read(|txn| {
            let t = txn.open_table(IMAGES)?;
            let key = id.to_string();
            match t.get(key.as_str())? {
                Some(v) => Ok(Some(from_json("images", &key, v.value())?)),
                None => Ok(None),
            }
        })
    }

    /// Finds an image by full ID (`sha256:…` or hex), unique ID prefix, name
    /// (`app`, `app:1`, `docker.io/library/app:latest`) or `name@sha256:…`
    /// (manifest digest).
    pub fn resolve(&self, name: &str) -> Result<ImageRecord> {
        let images = self.images()?;
        if let Some(i) = resolve_in(&images, name)? {
            return Ok(i);
        }
        // `name@sha256:…` may name the manifest of an image as shipped
        // (what `images --digests` prints for a built image).
        if let Some((_, dg)) = name.split_once('@')
            && let Ok(d) = dg.parse::<Digest>()
        {
            for (i, _) in &images {
                if i.layers.iter().any(|l| l.ship_as.is_some())
                    && self.shipped(i)?.is_some_and(|s| s.manifest == d)
                {
                    return Ok(i.clone());
                }
            }
        }
        Err(StoreError::NoSuchImage(name.to_owned()))
    }

    /// Points `target` at the image `source` names.
    pub fn tag(&self, _lock: &WriteLock, source: &str, target: &str) -> Result<Digest> {
        let img = self.resolve(source)?;
        let t = normalize_reference(target)?;
        if t.contains('@') {
            return Err(StoreError::InvalidReference(format!(
                "{target}: a tag cannot contain a digest"
            )));
        }
        self.write(|txn| {
            let mut tags = txn.open_table(TAGS)?;
            let images = txn.open_table(IMAGES)?;
            // Re-check inside the transaction: the image may have gone meanwhile.
            if images.get(img.id.to_string().as_str())?.is_none() {
                return Err(StoreError::NoSuchImage(source.to_owned()).into());
            }
            tags.insert(t.as_str(), img.id.to_string().as_str())?;
            Ok(())
        })?;
        Ok(img.id)
    }

    /// `rmi` for one name, with Docker's rules: a name with other tags left
    /// only untags; an image is deleted when no tag and no container needs it
    /// and no child image is built on it; a container using it refuses without
    /// `force`. Layers and blobs nothing needs any more are freed afterwards.
    pub fn remove_image(
        &self,
        lock: &WriteLock,
        name: &str,
        opts: RmiOptions,
    ) -> Result<Vec<RmiEvent>> {
        let images = self.images()?;
        let img =
            resolve_in(&images, name)?.ok_or_else(|| StoreError::NoSuchImage(name.to_owned()))?;
        let by_name = is_by_name(&images, name);
        // Layers a running build or reader holds keep their records.
        let leased = self.lease_roots(lock)?.digests;
        let events = self.write(|txn| {
            let mut ev = Vec::new();
            let mut tags = txn.open_table(TAGS)?;
            let mut imgs = txn.open_table(IMAGES)?;
            let containers = txn.open_table(CONTAINERS)?;
            let id = img.id.to_string();
            let my_tags: Vec<String> = collect_tags(&tags, &id)?;
            let users: Vec<String> = container_users(&containers, &img.id)?;
            if !(users.is_empty() || opts.force || by_name && my_tags.len() > 1) {
                return Err(StoreError::Conflict(format!(
                    "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                    short12(&users[0]),
                    img.id.short()
                ))
                .into());
            }
            let untag: Vec<String> = if by_name {
                let n = normalize_reference(name)?;
                if my_tags.contains(&n) { vec![n] } else { Vec::new() }
            } else {
                if my_tags.len() > 1 && !opts.force {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                        img.id.short()
                    ))
                    .into());
                }
                my_tags.clone()
            };
            for t in &untag {
                tags.remove(t.as_str())?;
                ev.push(RmiEvent::Untagged(familiar(t)));
            }
            if untag.len() < my_tags.len() {
                return Ok(ev);
            }
            let has_children = all_images(&imgs)?.iter().any(|i| i.parent == Some(img.id));
            if has_children {
                if untag.is_empty() {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
                        img.id.short()
                    ))
                    .into());
                }
                return Ok(ev);
            }
            if !users.is_empty() {
                // Forced: untagged, but the container still pins the image.
                return Ok(ev);
            }
            // Delete, then walk up the parent chain of untagged, unused images.
            let mut next = Some(img.clone());
            while let Some(cur) = next.take() {
                imgs.remove(cur.id.to_string().as_str())?;
                ev.push(RmiEvent::Deleted(cur.id));
                if opts.no_prune {
                    break;
                }
                let Some(parent) = cur.parent else { break };
                let pid = parent.to_string();
                let Some(prec) = imgs.get(pid.as_str())?.map(|g| g.value().to_owned()) else { break };
                let prec: ImageRecord = from_json("images", &pid, &prec)?;
                let used = !collect_tags(&tags, &pid)?.is_empty()
                    || !container_users(&containers, &parent)?.is_empty()
                    || all_images(&imgs)?.iter().any(|i| i.parent == Some(parent));
                if !used {
                    next = Some(prec);
                }
            }
            drop(imgs);
            // Layers no longer needed by anything go in the same transaction,
            // reported as Docker does: by ChainID of the deleted image.
            let freed = prune_layer_table(txn, &self.root, &leased)?;
            for c in img.chain_ids().iter().rev().zip(img.layers.iter().rev()) {
                if freed.contains(&c.1.diff_id) {
                    ev.push(RmiEvent::Deleted(*c.0));
                }
            }
            Ok(ev)
        })?;
        self.gc(lock)?;
        Ok(events)
    }

    /// Removes dangling images (no tag, no container, no child), or with `all`
    /// every image no tag or container needs, then collects garbage. Returns
    /// the `rmi`-style events.
    pub fn prune_images(&self, lock: &WriteLock, all: bool) -> Result<Vec<RmiEvent>> {
        let mut events = Vec::new();
        loop {
            let images = self.images()?;
            let containers = self.containers()?;
            let used: BTreeSet<Digest> = containers.iter().map(|c| c.image).collect();
            let parents: BTreeSet<Digest> = images.iter().filter_map(|(i, _)| i.parent).collect();
            let victim = images
                .iter()
                .find(|(i, t)| t.is_empty() && !used.contains(&i.id) && !parents.contains(&i.id));
            let victim = match victim {
                Some(v) => v,
                None if all => {
                    // Tagged images nothing runs: untag and delete them.
                    match images.iter().find(|(i, t)| {
                        !t.is_empty() && !used.contains(&i.id) && !parents.contains(&i.id)
                    }) {
                        Some(v) => v,
                        None => break,
                    }
                }
                None => break,
            };
            let opts = RmiOptions {
                force: true,
                no_prune: false,
            };
            let id = victim.0.id.to_string();
            let ev = self.remove_image(lock, &id, opts)?;
            if ev.is_empty() {
                break;
            }
            events.extend(ev);
        }
        // Also what is unused without any image going: blobs whose lease
        // died with its process (a killed build), leftovers of crashes.
        self.gc(lock)?;
        Ok(events)
    }
}

pub(crate) fn collect_tags(
    t: &impl ReadableTable<&'static str, &'static str>,
    id: &str,
) -> Result<Vec<String>, TxnError> {
    let mut out = Vec::new();
    for e in t.iter()? {
        let (k, v) = e?;
        if v.value() == id {
            out.push(k.value().to_owned());
        }
    }
    Ok(out)
}

pub(crate) fn resolve_in(
    images: &[(ImageRecord, Vec<String>)],
    name: &str,
) -> Result<Option<ImageRecord>> {
    let bare = name.strip_prefix("sha256:").unwrap_or(name);
    if let Ok(d) = Digest::from_hex(bare)
        && let Some((i, _)) = images.iter().find(|(i, _)| i.id == d)
    {
        return Ok(Some(i.clone()));
    }
    if let Some((_, dg)) = name.split_once('@') {
        let d: Digest = dg
            .parse()
            .map_err(|_| StoreError::InvalidReference(format!("{name}: invalid digest")))?;
        let pinned = normalize_reference(name).ok();
        return Ok(images
            .iter()
            .find(|(i, _)| {
                i.manifest == d || pinned.as_ref().is_some_and(|p| i.repo_digests.contains(p))
            })
            .map(|(i, _)| i.clone()));
    }
    if let Ok(n) = normalize_reference(name)
        && let Some((i, _)) = images.iter().find(|(_, t)| t.contains(&n))
    {
        return Ok(Some(i.clone()));
    }
    // Docker accepts any unique hex prefix of the ID.
    if !bare.is_empty()
        && bare.len() < 64
        && bare
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        let m: Vec<_> = images
            .iter()
            .filter(|(i, _)| i.id.hex().starts_with(bare))
            .collect();
        return match m.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.0.clone())),
            _ => Err(StoreError::Conflict(format!(
                "multiple IDs found with provided prefix: {bare}"
            ))),
        };
    }
    Ok(None)
}

/// Whether `name` named the image by a tag (rather than by ID or digest).
pub(crate) fn is_by_name(images: &[(ImageRecord, Vec<String>)], name: &str) -> bool {
    if name.contains('@') {
        return false;
    }
    match normalize_reference(name) {
        Ok(n) => images.iter().any(|(_, t)| t.contains(&n)),
        Err(_) => false,
    }
}
