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
use std::path::Path;

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

/// A build and the work it did outside its steps.
struct Built {
    result: BuildResult,
    internal: Vec<InternalWork>,
}

impl Built {
    fn unpacked(&self) -> usize {
        self.internal
            .iter()
            .map(|w| match w {
                InternalWork::Unpacking { layers } => *layers,
                _ => 0,
            })
            .sum()
    }

    fn context_files_hashed(&self) -> usize {
        self.internal
            .iter()
            .map(|w| match w {
                InternalWork::HashingContext { files } => *files,
                _ => 0,
            })
            .sum()
    }

    fn indexed(&self) -> usize {
        self.internal
            .iter()
            .map(|w| match w {
                InternalWork::Indexing { layers } => *layers,
                _ => 0,
            })
            .sum()
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
    if !strata_testutil::require_root("a_fully_cached_multi_stage_rebuild_unpacks_nothing") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let opts = options(&ctx, DOCKERFILE);

    let first = build(&store, &opts);
    assert_eq!(first.result.steps_cached, 0);
    // The COPY --from steps ran: their sources were materialised.
    assert!(first.unpacked() > 0, "{:?}", first.internal);
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
    std::fs::remove_dir_all(tmp.path().join("root/indexes")).unwrap();
    let reindexed = build(&store, &opts);
    assert_eq!(reindexed.result.image_id, first.result.image_id);
    assert_eq!(reindexed.result.steps_cached, 7);
    assert_eq!(reindexed.unpacked(), 0, "{:?}", reindexed.internal);
    assert!(reindexed.indexed() > 0, "{:?}", reindexed.internal);
}

#[test]
fn copy_from_keys_change_when_and_only_when_a_selected_file_changes() {
    if !strata_testutil::require_root(
        "copy_from_keys_change_when_and_only_when_a_selected_file_changes",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let opts = options(&ctx, DOCKERFILE);
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
    if !strata_testutil::require_root("image_ids_and_exports_are_byte_identical_to_before") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let store = Store::open(&tmp.path().join("root")).unwrap();
    let dest = tmp.path().join("image.tar");
    let mut opts = options(&ctx, DOCKERFILE);
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
    if !strata_testutil::require_root("layers_are_compressed_only_when_an_export_needs_them") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    context(&ctx);
    let root = tmp.path().join("root");
    let store = Store::open(&root).unwrap();
    let mut opts = options(&ctx, DOCKERFILE);

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
