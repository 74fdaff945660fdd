//! The local image store under `$STRATA_ROOT`: content blobs, unpacked layer
//! snapshots, image records and tags, containers and the build cache, with
//! metadata in one transactional database.
//!
//! Invariant: a crash at any point leaves no tag pointing at a missing image and
//! no layer deleted while something refers to it. Every file write goes through
//! the atomic-write helper in `strata-oci`.
