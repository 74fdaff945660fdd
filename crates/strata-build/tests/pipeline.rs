//! The layer pipeline's mechanisms, proved by what the solver reports
//! (its `Event`s), not by timings: a fully cached multi-stage rebuild
//! unpacks nothing, `COPY --from` keys follow exactly the selected files,
//! and layers keep the bytes they had before the pipeline changed.
//!
//! COPY-only builds on `FROM scratch`, so no namespaces are needed; the
//! snapshot unpacking a COPY onto a built stage does needs root (rootless
//! unpacking goes through a user namespace of its own).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use strata_build::{BuildOptions, BuildResult, Event, InternalWork};
use strata_store::Store;

/// What the build of [`DOCKERFILE`] gives, recorded once: its image ID, the
/// manifest digest as shipped and the bytes of its OCI export. A change to
/// the layer pipeline must leave them alone; a deliberate change to image
/// bytes re-records them and says so in its commit.
const PINNED_IMAGE_ID: &str =
    "sha256:f8127244f31e1814c835878b803767f5f1f890f7d92e578a9a6f1ce8c98ab283";
const PINNED_MANIFEST: &str =
    "sha256:eb83b9dd562af81857527273e5520fbf20a5fb3f8e6244ff41c3d038afa01b2d";
const PINNED_OCI_TAR: &str =
    "sha256:ed4605e5f310c902532fb648cf81b7ea04a48a78c48cbdf6453ed9e3903ba3d8";

const DOCKERFILE: &str = "\
FROM scratch AS src
COPY . /src/
FROM scratch AS mid
COPY --from=src /src/a.txt /a.txt
COPY --from=src /src/l* /links/
COPY --from=src /src/dir /d/
FROM scratch
COPY --from=mid /a.txt /
COPY --from=mid /links/ /links/
COPY --from=mid /d /out/
";

fn write(p: &Path, data: &str, mode: u32) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn context(dir: &Path) {
    write(&dir.join("a.txt"), "a\n", 0o644);
    write(&dir.join("dir/b.txt"), "b\n", 0o644);
    write(&dir.join("dir/sub/c.txt"), "c\n", 0o600);
    std::os::unix::fs::symlink("dir/b.txt", dir.join("link")).unwrap();
    for d in [dir.to_path_buf(), dir.join("dir"), dir.join("dir/sub")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn options(ctx: &Path, dockerfile: &str) -> BuildOptions {
    BuildOptions {
        context: ctx.to_owned(),
        dockerfile_name: "Dockerfile".into(),
        dockerfile: dockerfile.into(),
        tags: Vec::new(),
        build_args: BTreeMap::from([("SOURCE_DATE_EPOCH".to_owned(), "1000".to_owned())]),
        target: None,
        no_cache: false,
        no_cache_filter: Vec::new(),
        outputs: Vec::new(),
        network: strata_exec::Network::None,
        labels: BTreeMap::new(),
        timestamp_now: false,
        secrets: BTreeMap::new(),
        ssh_socket: None,
        pull: false,
        registry: None,
        cache_from: Vec::new(),
        cache_to: Vec::new(),
        jobs: 1,
        extra_hosts: Vec::new(),
        shm_size: None,
        platforms: Vec::new(),
        cancel: None,
        isolation: strata_exec::Isolation::Namespaces,
        named_contexts: BTreeMap::new(),
        attestations: Default::default(),
        ulimits: Vec::new(),
        cgroup_parent: None,
    }
}

/// What every test here starts from: a temporary directory holding the
/// context (`ctx`) and a store (`root`), and the options that build that
/// context; `None` (a loud skip) without root.
struct Fixture {
    tmp: tempfile::TempDir,
    ctx: PathBuf,
    root: PathBuf,
    store: Store,
    opts: BuildOptions,
}

fn fixture(test: &str) -> Option<Fixture> {
    if !strata_testutil::require_root(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let root = tmp.path().join("root");
    let store = Store::open(&root).unwrap();
    let opts = options(&ctx, DOCKERFILE);
    Some(Fixture {
        tmp,
        ctx,
        root,
        store,
        opts,
    })
}

/// A build and the work it did outside its steps.
struct Built {
    result: BuildResult,
    internal: Vec<InternalWork>,
}

/// The kind of internal work `w` is, and how much of it it did.
fn work_count(w: &InternalWork) -> (&'static str, usize) {
    match w {
        InternalWork::Unpacking { layers } => ("unpacking", *layers),
        InternalWork::HashingContext { files } => ("hashing context", *files),
        InternalWork::Indexing { layers } => ("indexing", *layers),
        _ => ("other", 0),
    }
}

impl Built {
    /// How much internal work of `kind` (see [`work_count`]) the build did.
    fn total(&self, kind: &str) -> usize {
        self.internal
            .iter()
            .map(work_count)
            .filter(|(k, _)| *k == kind)
            .map(|(_, n)| n)
            .sum()
    }

    fn unpacked(&self) -> usize {
        self.total("unpacking")
    }

    fn context_files_hashed(&self) -> usize {
        self.total("hashing context")
    }

    fn indexed(&self) -> usize {
        self.total("indexing")
    }
}

fn build(store: &Store, opts: &BuildOptions) -> Built {
    let mut internal = Vec::new();
    let result = strata_build::build(store, opts, &mut |e| {
        if let Event::Internal { work, .. } = e {
            internal.push(work);
        }
    })
    .unwrap();
    Built { result, internal }
}

#[test]
fn a_fully_cached_multi_stage_rebuild_unpacks_nothing() {
    let Some(Fixture {
        tmp: _tmp,
        root,
        store,
        opts,
        ..
    }) = fixture("a_fully_cached_multi_stage_rebuild_unpacks_nothing")
    else {
        return;
    };

    let first = build(&store, &opts);
    assert_eq!(first.result.steps_cached, 0);
    // The COPY --from steps ran, reading the source stages' snapshots:
    // nothing was unpacked, and their 8 files were hard-linked from those
    // snapshots, not copied (only `COPY .` copied, its 3 context files).
    assert_eq!(first.unpacked(), 0, "{:?}", first.internal);
    let copied: usize = copies(&first).iter().map(|c| c.0).sum();
    assert_eq!(copied, 3, "{:?}", first.internal);
    assert_eq!(shared(&first), 8, "{:?}", first.internal);
    // Layers written by this build were indexed as they were written.
    assert_eq!(first.indexed(), 0, "{:?}", first.internal);
    // One line per layer written, with its time.
    let written = first
        .internal
        .iter()
        .filter(|w| **w == InternalWork::WritingLayer)
        .count();
    assert_eq!(written, 7, "{:?}", first.internal);
    // `COPY .` read the three context files; a rebuild reads none.
    assert_eq!(first.context_files_hashed(), 3, "{:?}", first.internal);

    let again = build(&store, &opts);
    assert_eq!(again.result.image_id, first.result.image_id);
    assert_eq!(again.result.layers_built, 0);
    assert_eq!(again.result.steps_cached, 7);
    assert_eq!(again.unpacked(), 0, "{:?}", again.internal);
    assert_eq!(again.indexed(), 0, "{:?}", again.internal);
    assert_eq!(again.context_files_hashed(), 0, "{:?}", again.internal);

    // A store whose layers have no index yet (made before indexes
    // existed): they are indexed from their tars, still nothing unpacked.
    std::fs::remove_dir_all(root.join("indexes")).unwrap();
    let reindexed = build(&store, &opts);
    assert_eq!(reindexed.result.image_id, first.result.image_id);
    assert_eq!(reindexed.result.steps_cached, 7);
    assert_eq!(reindexed.unpacked(), 0, "{:?}", reindexed.internal);
    assert!(reindexed.indexed() > 0, "{:?}", reindexed.internal);
}

#[test]
fn copy_from_keys_change_when_and_only_when_a_selected_file_changes() {
    let Some(Fixture {
        tmp: _tmp,
        ctx,
        store,
        opts,
        ..
    }) = fixture("copy_from_keys_change_when_and_only_when_a_selected_file_changes")
    else {
        return;
    };
    let first = build(&store, &opts);

    // A file under `dir` changes: `COPY . /src/` and the two steps copying
    // `dir` (in mid, then from mid) run; the a.txt and link steps before
    // them in both stages stay cached.
    // Same size, same mode: only the content tells.
    write(&ctx.join("dir/sub/c.txt"), "d\n", 0o600);
    let content = build(&store, &opts);
    assert_eq!(content.result.layers_built, 3, "{:?}", content.internal);
    assert_eq!(content.result.steps_cached, 4);
    assert_ne!(content.result.image_id, first.result.image_id);

    // Metadata alone (a mode) changes a selected file's key too: a.txt is
    // the first step of both stages, so everything after it runs as well.
    std::fs::set_permissions(ctx.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mode = build(&store, &opts);
    assert_eq!(mode.result.steps_cached, 0, "{:?}", mode.internal);

    // A file no COPY --from selects: only the context copy runs again; its
    // layer differs, yet every COPY --from step is still a hit.
    write(&ctx.join("unselected.txt"), "x\n", 0o644);
    let unrelated = build(&store, &opts);
    assert_eq!(unrelated.result.layers_built, 1, "{:?}", unrelated.internal);
    assert_eq!(unrelated.result.steps_cached, 6);
    assert_eq!(unrelated.result.image_id, mode.result.image_id);

    // The symlink's target changes: the glob-selected link is re-keyed in
    // both stages (and the `dir` steps after it run on a new parent); the
    // a.txt steps before it stay cached.
    std::fs::remove_file(ctx.join("link")).unwrap();
    std::os::unix::fs::symlink("a.txt", ctx.join("link")).unwrap();
    let link = build(&store, &opts);
    assert_eq!(link.result.layers_built, 5, "{:?}", link.internal);
    assert_eq!(link.result.steps_cached, 2);
}

/// What strata made of this Dockerfile and context before the layer
/// pipeline changed (main at a321679, with issue #13's image changes and
/// the single-pass layer writer: `strata build --build-arg
/// SOURCE_DATE_EPOCH=1000 -o type=oci,dest=X`): the image ID, the manifest
/// digest and the bytes of the exported OCI tar stay the same. Changed once
/// since, on purpose: `COPY --from=src /src/l* /links/` follows the symlink
/// the wildcard matches (a file `/links/link`), as BuildKit's copy does.
#[test]
fn image_ids_and_exports_are_byte_identical_to_before() {
    let Some(Fixture {
        tmp,
        store,
        mut opts,
        ..
    }) = fixture("image_ids_and_exports_are_byte_identical_to_before")
    else {
        return;
    };
    let dest = tmp.path().join("image.tar");
    opts.outputs =
        vec![strata_build::parse_output(&format!("type=oci,dest={}", dest.display())).unwrap()];
    for round in ["built", "cached"] {
        let built = build(&store, &opts);
        assert_eq!(
            built.result.image_id.to_string(),
            PINNED_IMAGE_ID,
            "{round}"
        );
        assert_eq!(
            built.result.manifest_digest.to_string(),
            PINNED_MANIFEST,
            "{round}"
        );
        // Exporting is reported as work of its own, with what it wrote.
        let exported = format!("type=oci,dest={}", dest.display());
        assert!(
            built
                .internal
                .iter()
                .any(|w| matches!(w, InternalWork::Exporting { output } if *output == exported)),
            "{:?}",
            built.internal
        );
        let tar = std::fs::read(&dest).unwrap();
        assert_eq!(
            strata_oci::Digest::of(&tar).to_string(),
            PINNED_OCI_TAR,
            "{round}"
        );
    }
}

/// Whether any blob in the store is gzip data.
fn gzip_blobs(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let mut head = [0u8; 2];
        let n = std::io::Read::read(&mut std::fs::File::open(&p).unwrap(), &mut head).unwrap();
        if n == 2 && head == [0x1f, 0x8b] {
            out.push(p.display().to_string());
        }
    }
    out
}

fn compressed(built: &Built) -> usize {
    built
        .internal
        .iter()
        .map(|w| match w {
            InternalWork::Compressing { layers } => *layers,
            _ => 0,
        })
        .sum()
}

/// Layers are stored uncompressed and compressed only when an output ships
/// them: a build into the store leaves no gzip blob; the first export
/// compresses the image's layers (its own progress line) into exactly the
/// bytes recorded before layers were kept uncompressed (the pins of
/// `image_ids_and_exports_are_byte_identical_to_before`); a second export
/// reuses them; GC keeps them with their layers.
#[test]
fn layers_are_compressed_only_when_an_export_needs_them() {
    let Some(Fixture {
        tmp,
        root,
        store,
        mut opts,
        ..
    }) = fixture("layers_are_compressed_only_when_an_export_needs_them")
    else {
        return;
    };

    let stored = build(&store, &opts);
    assert_eq!(stored.result.image_id.to_string(), PINNED_IMAGE_ID);
    assert_eq!(compressed(&stored), 0, "{:?}", stored.internal);
    assert_eq!(gzip_blobs(&root), Vec::<String>::new());
    let image = store
        .get_image(&stored.result.image_id)
        .unwrap()
        .expect("the built image is in the store");
    assert_eq!(image.layers.len(), 3);
    for l in &image.layers {
        // Stored as the plain tar: the blob is named by the diffID.
        assert_eq!(l.blob, l.diff_id);
        assert_eq!(l.media_type, strata_store::MEDIA_LAYER_TAR);
        assert_eq!(l.ship_as, Some(strata_oci::Compression::default()));
    }
    assert_eq!(store.shipped(&image).unwrap(), None);

    let dest = tmp.path().join("image.tar");
    opts.outputs =
        vec![strata_build::parse_output(&format!("type=oci,dest={}", dest.display())).unwrap()];
    let exported = build(&store, &opts);
    assert_eq!(exported.result.layers_built, 0);
    assert_eq!(compressed(&exported), 3, "{:?}", exported.internal);
    assert_eq!(gzip_blobs(&root).len(), 3);
    let pinned_tar = PINNED_OCI_TAR;
    let pinned_manifest = PINNED_MANIFEST;
    assert_eq!(
        strata_oci::Digest::of(&std::fs::read(&dest).unwrap()).to_string(),
        pinned_tar
    );
    assert_eq!(exported.result.manifest_digest.to_string(), pinned_manifest);

    // Kept: the next export compresses nothing and writes the same bytes.
    std::fs::remove_file(&dest).unwrap();
    let again = build(&store, &opts);
    assert_eq!(compressed(&again), 0, "{:?}", again.internal);
    assert_eq!(
        strata_oci::Digest::of(&std::fs::read(&dest).unwrap()).to_string(),
        pinned_tar
    );

    // GC keeps the encodings while the image needs its layers; the
    // shipped manifest is the one recorded before.
    store.gc(&store.lock().unwrap()).unwrap();
    let reading = store.lease_images("test", [(&image, "pinned")]).unwrap();
    let (shipped, made) = store.ship(&reading, &image).unwrap();
    drop(reading);
    let lock = store.lock().unwrap();
    assert_eq!(made, 0);
    assert_eq!(shipped.manifest.to_string(), pinned_manifest);
    assert_eq!(gzip_blobs(&root).len(), 3);
    // ...and frees them with the image and its cache records.
    store
        .remove_image(
            &lock,
            &image.id.to_string(),
            strata_store::RmiOptions {
                force: true,
                no_prune: false,
            },
        )
        .unwrap();
    for (k, _) in store.cache_list().unwrap() {
        store.cache_remove(&lock, &k).unwrap();
    }
    store.gc(&lock).unwrap();
    assert_eq!(gzip_blobs(&root), Vec::<String>::new());
}

/// The `CopyingFiles` lines of a build, in order: (copied, linked).
fn copies(built: &Built) -> Vec<(usize, usize)> {
    built
        .internal
        .iter()
        .filter_map(|w| match w {
            InternalWork::CopyingFiles { copied, linked, .. } => Some((*copied, *linked)),
            _ => None,
        })
        .collect()
}

/// The files a build's `COPY --from` steps linked from their sources'
/// snapshots.
fn shared(built: &Built) -> usize {
    built
        .internal
        .iter()
        .map(|w| match w {
            InternalWork::CopyingFiles { shared, .. } => *shared,
            _ => 0,
        })
        .sum()
}

/// The snapshot directories of an image's layers, bottom first.
fn snapshots(store: &Store, root: &Path, image: &strata_oci::Digest) -> Vec<std::path::PathBuf> {
    let (record, _) = store
        .images()
        .unwrap()
        .into_iter()
        .find(|(i, _)| i.id == *image)
        .expect("the image is in the store");
    record
        .layers
        .iter()
        .map(|l| root.join("snapshots").join(l.diff_id.hex()))
        .collect()
}

/// (device, inode, link count) of a path.
fn inode(p: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.dev(), m.ino(), m.nlink())
}

/// Asserts that `files` are one inode in both snapshots (now with several
/// links) and that `changed` is a new file, the old one keeping its bytes.
fn assert_linked(old: &Path, new: &Path, files: &[&str], changed: &str, was: &str, is: &str) {
    for f in files {
        let (o, n) = (inode(&old.join(f)), inode(&new.join(f)));
        assert_eq!((o.0, o.1), (n.0, n.1), "{f} is one inode in both snapshots");
        assert!(n.2 >= 2, "{f} has {} links", n.2);
    }
    assert_ne!(inode(&old.join(changed)).1, inode(&new.join(changed)).1);
    assert_eq!(
        inode(&new.join(changed)).2,
        1,
        "{changed} is a file of its own"
    );
    assert_eq!(std::fs::read_to_string(old.join(changed)).unwrap(), was);
    assert_eq!(std::fs::read_to_string(new.join(changed)).unwrap(), is);
}

/// After one context file changes, a COPY reads only that file (to hash it
/// and to copy it) and hard-links every other file from the previous
/// snapshot of the same step (same instruction and parent), `--chmod`
/// included; the old snapshot keeps its bytes; and the image is the one a
/// build with no cache, in this store or a new one, makes of the context.
#[test]
fn a_one_file_change_rereads_only_that_file_and_links_the_rest() {
    if !strata_testutil::require_root("a_one_file_change_rereads_only_that_file_and_links_the_rest")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    for i in 0..12 {
        write(
            &ctx.join(format!("d{}/f{i}", i % 3)),
            &format!("file {i}\n"),
            0o644,
        );
    }
    write(&ctx.join("d1/secret"), "s\n", 0o600);
    std::os::unix::fs::symlink("d0/f0", ctx.join("link")).unwrap();
    std::fs::create_dir_all(ctx.join("empty")).unwrap();
    let root = tmp.path().join("root");
    let store = Store::open(&root).unwrap();
    let df = "FROM scratch\nCOPY --chmod=640 d1 /d1/\nCOPY . /app/\n";
    let opts = options(&ctx, df);

    let first = build(&store, &opts);
    // 5 files under d1, 13 in the context; nothing to link from yet.
    assert_eq!(
        copies(&first),
        vec![(5, 0), (13, 0)],
        "{:?}",
        first.internal
    );
    // d1's files are read once, although both steps copy them.
    assert_eq!(first.context_files_hashed(), 13);
    let one = snapshots(&store, &root, &first.result.image_id);

    // A file only `COPY .` copies; same size and mode, new content.
    write(&ctx.join("d0/f3"), "file 8\n", 0o644);
    let second = build(&store, &opts);
    assert_eq!(second.result.layers_built, 1);
    assert_eq!(second.context_files_hashed(), 1, "{:?}", second.internal);
    assert_eq!(copies(&second), vec![(1, 12)], "{:?}", second.internal);
    let two = snapshots(&store, &root, &second.result.image_id);
    assert_eq!(one[0], two[0]);
    let app = ["app/d0/f0", "app/d1/f4", "app/d1/secret", "app/d2/f11"];
    assert_linked(&one[1], &two[1], &app, "app/d0/f3", "file 3\n", "file 8\n");

    // A file of d1: the `--chmod` step links the rest of d1; the step after
    // it has a new parent, so it has no previous snapshot and copies all.
    write(&ctx.join("d1/f4"), "file 9\n", 0o644);
    let third = build(&store, &opts);
    assert_eq!(third.context_files_hashed(), 1, "{:?}", third.internal);
    assert_eq!(
        copies(&third),
        vec![(1, 4), (13, 0)],
        "{:?}",
        third.internal
    );
    let three = snapshots(&store, &root, &third.result.image_id);
    let d1 = ["d1/f1", "d1/f7", "d1/secret"];
    assert_linked(&two[0], &three[0], &d1, "d1/f4", "file 4\n", "file 9\n");

    // The same context without the cache, in this store (nothing linked)
    // and in a new one: the same image, so the same layer bytes.
    let no_cache = BuildOptions {
        no_cache: true,
        ..opts.clone()
    };
    let fresh = build(&store, &no_cache);
    assert_eq!(
        copies(&fresh),
        vec![(5, 0), (13, 0)],
        "{:?}",
        fresh.internal
    );
    assert_eq!(fresh.result.image_id, third.result.image_id);
    let other = Store::open(&tmp.path().join("other")).unwrap();
    assert_eq!(build(&other, &opts).result.image_id, third.result.image_id);
    // The second image, built anew from its context in a new store.
    write(&ctx.join("d1/f4"), "file 4\n", 0o644);
    let other = Store::open(&tmp.path().join("third")).unwrap();
    assert_eq!(build(&other, &opts).result.image_id, second.result.image_id);
}

/// A later source of the same COPY landing on a file linked from the
/// previous snapshot replaces the link: the snapshot's file keeps its
/// bytes, and the new file is one of its own.
#[test]
fn a_later_source_over_a_linked_file_never_writes_into_the_snapshot() {
    if !strata_testutil::require_root(
        "a_later_source_over_a_linked_file_never_writes_into_the_snapshot",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    // Twins at first: b's copy lands on a's, and the snapshot holds it.
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(500);
    for d in ["a", "b"] {
        write(&ctx.join(format!("{d}/same")), "twin\n", 0o644);
        let f = std::fs::File::open(ctx.join(format!("{d}/same"))).unwrap();
        f.set_times(std::fs::FileTimes::new().set_modified(when))
            .unwrap();
    }
    let root = tmp.path().join("root");
    let store = Store::open(&root).unwrap();
    let opts = options(&ctx, "FROM scratch\nCOPY a/ b/ /m/\n");
    let first = build(&store, &opts);
    let old = snapshots(&store, &root, &first.result.image_id)[0].join("m/same");

    // a/same still matches the snapshot's file and is linked; b/same, now
    // different, is copied over the link.
    write(&ctx.join("b/same"), "new!\n", 0o644);
    let second = build(&store, &opts);
    assert_eq!(copies(&second), vec![(1, 1)], "{:?}", second.internal);
    let new = snapshots(&store, &root, &second.result.image_id)[0].join("m/same");
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "twin\n");
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "new!\n");
    assert_eq!(inode(&old).2, 1);
    assert_eq!(inode(&new).2, 1);
    let other = Store::open(&tmp.path().join("other")).unwrap();
    assert_eq!(build(&other, &opts).result.image_id, second.result.image_id);
}
