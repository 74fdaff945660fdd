//! Reads arbitrary bytes as an image archive (OCI layout or docker-archive
//! tar, possibly compressed). Invariants: never panics; whatever it returns
//! refers only to blobs present in the store that hash to their names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_oci::BlobStore;
use strata_oci::archive::read_archive_from;

fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(store) = BlobStore::open(dir.path()) else { return };
    if let Ok(images) = read_archive_from(data, &store) {
        for img in images {
            for d in std::iter::once(&img.manifest.config).chain(&img.manifest.layers) {
                assert!(store.verify(&d.digest).is_ok(), "unverified blob {}", d.digest);
            }
        }
    }
});
