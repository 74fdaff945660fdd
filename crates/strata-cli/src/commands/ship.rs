//! Images as shipped: layers a build stored uncompressed get their
//! compressed forms (and the manifest over them) when a command first needs
//! the shipped bytes or digest (`save`, `--load`, `inspect`,
//! `images --digests`, metadata files).

use anyhow::Context;
use strata_oci::Digest;
use strata_store::{ImageRecord, Store};

/// The digest of `img`'s manifest as shipped (`save`, `push`): for an
/// image a build stored with uncompressed layers, the manifest over their
/// compressed forms, made now if nothing has shipped them yet (compressed
/// outside the store lock, under a read lease on the image); the same
/// digest a build storing gzip layers recorded. As before, the manifest it
/// names is a blob in the store.
pub(crate) fn shipped_digest(store: &Store, img: &ImageRecord) -> anyhow::Result<Digest> {
    if let Some(s) = store.shipped(img)?
        && store.has_blob(&s.manifest)
    {
        return Ok(s.manifest);
    }
    let id = img.id.to_string();
    let lease = store.lease_images("ship", [(img, id.as_str())])?;
    let (shipped, _) = store
        .ship(&lease, img)
        .with_context(|| format!("compressing the layers of image {}", img.id))?;
    Ok(shipped.manifest)
}

/// Makes sure each image's shipped form (layers compressed as they ship,
/// and the manifest over them) is stored, before it is written out, and
/// holds each shipped manifest in `lease` (which already holds the images,
/// so their layers and encodings stay): a concurrent `rmi` + `prune` then
/// frees nothing the writer reads. Compression runs outside the store
/// lock, so other builds commit meanwhile.
pub(crate) fn ship_all<'a>(
    store: &Store,
    lease: &strata_store::Lease,
    images: impl IntoIterator<Item = &'a ImageRecord>,
) -> anyhow::Result<()> {
    for img in images {
        if let Some(s) = store.shipped(img)?.filter(|s| store.has_blob(&s.manifest)) {
            // Leased under the lock, after checking it is still there.
            let lock = store.lock()?;
            if store.has_blob(&s.manifest) {
                lease.add(&lock, [s.manifest])?;
                continue;
            }
        }
        store
            .ship(lease, img)
            .with_context(|| format!("compressing the layers of image {}", img.id))?;
    }
    Ok(())
}
