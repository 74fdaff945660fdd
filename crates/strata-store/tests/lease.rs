//! Leases: GC keeps what a live lease names (blobs, layers, in-flight
//! writes), removes the lease files of dead processes and what only they
//! named, and a reader that lost a race with `rmi` is told so.

mod common;

use std::io::Write;

use common::tar_with;
use strata_store::{KeyKind, RmiOptions, Store, StoreError, empty_config, put_layer, write_image};

fn image(store: &Store, name: &str) -> strata_store::ImageRecord {
    let lock = store.lock().expect("lock");
    let l = put_layer(store, &lock, &tar_with("f", name)[..]).expect("layer");
    write_image(
        store,
        &lock,
        empty_config(1),
        vec![l],
        None,
        &[format!("docker.io/library/{name}:1")],
    )
    .expect("image")
}

fn lease_files(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("leases"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn a_leased_image_survives_rmi_until_the_lease_goes() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let img = image(&store, "leased");
    let lease = store
        .lease_images("save", [(&img, "leased:1")])
        .expect("lease");
    let lock = store.lock().expect("lock");
    store
        .remove_image(&lock, "leased:1", RmiOptions::default())
        .expect("rmi");
    store.gc(&lock).expect("gc");
    for d in [img.id, img.manifest, img.layers[0].blob] {
        assert!(store.has_blob(&d), "{d} freed under a live lease");
    }
    // What a reader needs is still readable.
    store.read_blob(&img.manifest).expect("manifest readable");
    drop(lease);
    let report = store.gc(&lock).expect("gc");
    assert_eq!(report.blobs_removed.len(), 3, "{report:?}");
    assert_eq!(lease_files(&store), 0);
}

#[test]
fn a_reader_that_lost_the_race_with_rmi_is_told_the_image_was_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let img = store
        .resolve("gone:1")
        .err()
        .map(|_| image(&store, "gone"))
        .expect("made");
    // Resolved (above), then removed by another command before the lease.
    let lock = store.lock().expect("lock");
    store
        .remove_image(&lock, "gone:1", RmiOptions::default())
        .expect("rmi");
    drop(lock);
    let err = store
        .lease_images("save", [(&img, "gone:1")])
        .expect_err("lease of a removed image");
    assert!(matches!(err, StoreError::ImageRemoved(_)), "{err:?}");
    assert!(err.to_string().contains("was removed meanwhile"), "{err}");
}

#[test]
fn an_in_flight_blob_and_layer_are_kept_and_a_dead_lease_is_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let lease = store.lease("build").expect("lease");
    // A blob being written: its temp file must survive GC while the lease
    // lives (the writer holds no store lock).
    let mut w = store.blob_writer(&lease).expect("writer");
    w.write_all(b"layer bytes").expect("write");
    let diff_id = strata_oci::Digest::of(b"the layer's tar");
    store.gc(&store.lock().expect("lock")).expect("gc");
    let lock = store.lock().expect("lock");
    lease.add(&lock, [diff_id]).expect("lease diffID");
    let (blob, _) = store
        .commit_blob(&lock, &lease, w, None)
        .expect("commit after GC");
    drop(lock);
    std::fs::create_dir_all(store.snapshot_dir(&diff_id)).expect("snapshot dir");
    let report = store.gc(&store.lock().expect("lock")).expect("gc");
    assert!(store.has_blob(&blob), "in-flight blob freed: {report:?}");
    assert!(
        store.snapshot_dir(&diff_id).is_dir(),
        "in-flight snapshot freed"
    );
    let check = store
        .check(&store.lock().expect("lock"), false)
        .expect("check");
    assert_eq!(check.unreferenced_blobs, 0, "a leased blob is in use");

    // The process dies: the kernel drops its flock, its file stays. A copy
    // of the file that nobody locks is exactly that; the original goes.
    let dead = store.root().join("leases/4242-dead.lease");
    std::fs::copy(lease.path(), &dead).expect("copy");
    drop(lease);
    let report = store.gc(&store.lock().expect("lock")).expect("gc");
    assert_eq!(report.leases_removed, 1, "{report:?}");
    assert!(!dead.exists());
    assert!(!store.has_blob(&blob), "only the dead lease named it");
    assert!(!store.snapshot_dir(&diff_id).exists());
}

#[test]
fn a_key_lock_is_exclusive_across_handles() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let key = strata_oci::Digest::of(b"layer");
    let held = store.key_lock(KeyKind::Snapshot, &key).expect("lock");
    let path = store.root().join(format!("locks/snapshot-{}", key.hex()));
    let other = std::fs::File::open(&path).expect("open lock file");
    assert!(
        matches!(other.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        "a second handle got the key lock"
    );
    drop(held);
    other.try_lock().expect("free once dropped");
    drop(other);
    // Nothing holds the key: GC removes its lock file.
    store.gc(&store.lock().expect("lock")).expect("gc");
    assert!(!path.exists());
}
