//! Store semantics: references computed across images, containers and the
//! build cache; GC freeing exactly what nothing refers to; metadata never
//! pointing at missing blobs.

mod common;

use common::tar_with;
use serde_json::json;
use strata_oci::Digest;
use strata_store::{
    CacheRecord, ContainerRecord, CtxMeta, RmiEvent, RmiOptions, Store, StoreError, empty_config,
    put_layer, write_image,
};

fn blobs(store: &Store) -> usize {
    std::fs::read_dir(store.root().join("blobs/sha256"))
        .map(|r| r.count())
        .unwrap_or(0)
}

/// base (layer A) and child (layers A, B, parent base).
fn two_images(store: &Store) -> (strata_store::ImageRecord, strata_store::ImageRecord) {
    let lock = store.lock().expect("lock");
    let a = put_layer(store, &lock, &tar_with("a", "aaa")[..]).expect("layer a");
    let b = put_layer(store, &lock, &tar_with("b", "bbb")[..]).expect("layer b");
    let base = write_image(
        store,
        &lock,
        empty_config(1),
        vec![a.clone()],
        None,
        &["docker.io/library/base:1".into()],
    )
    .expect("base");
    let child = write_image(
        store,
        &lock,
        empty_config(2),
        vec![a, b],
        Some(base.id),
        &["docker.io/library/child:1".into()],
    )
    .expect("child");
    (base, child)
}

#[test]
fn shared_layer_survives_until_last_image_goes() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let (base, child) = two_images(&store);
    assert_eq!(blobs(&store), 6, "2 layers + 2 configs + 2 manifests");
    let lock = store.lock().expect("lock");
    // base has a child: untagging leaves it in place (docker keeps parents).
    let ev = store
        .remove_image(&lock, "base:1", RmiOptions::default())
        .expect("rmi base");
    assert_eq!(ev, vec![RmiEvent::Untagged("base:1".into())]);
    assert!(store.get_image(&base.id).expect("get").is_some());
    // Removing the child deletes it and, pruning, its untagged parent; then
    // every blob is unreferenced and freed.
    let ev = store
        .remove_image(&lock, "child:1", RmiOptions::default())
        .expect("rmi child");
    assert_eq!(ev[0], RmiEvent::Untagged("child:1".into()));
    assert!(ev.contains(&RmiEvent::Deleted(child.id)));
    assert!(ev.contains(&RmiEvent::Deleted(base.id)));
    assert_eq!(blobs(&store), 0);
    assert!(
        store
            .check(&lock, false)
            .expect("check")
            .problems
            .is_empty()
    );
}

#[test]
fn no_prune_keeps_untagged_parent_and_its_layer() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let (base, child) = two_images(&store);
    let lock = store.lock().expect("lock");
    store
        .remove_image(&lock, "base:1", RmiOptions::default())
        .expect("untag base");
    let ev = store
        .remove_image(
            &lock,
            "child:1",
            RmiOptions {
                force: false,
                no_prune: true,
            },
        )
        .expect("rmi");
    assert!(ev.contains(&RmiEvent::Deleted(child.id)));
    assert!(!ev.contains(&RmiEvent::Deleted(base.id)));
    // Exactly the child's own blobs are gone: config, manifest, layer b.
    assert_eq!(blobs(&store), 3);
    assert!(store.has_blob(&base.layers[0].blob));
    assert!(!store.has_blob(&child.layers[1].blob));
}

#[test]
fn container_pins_its_image() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let (_, child) = two_images(&store);
    let lock = store.lock().expect("lock");
    let c = ContainerRecord {
        id: "ab".repeat(32),
        name: "c1".into(),
        image: child.id,
        image_name: "child:1".into(),
        command: vec!["true".into()],
        upper: store.container_dir(&"ab".repeat(32)).join("layer.tar"),
        created: 3,
        state: "exited(0)".into(),
        owner: None,
    };
    store.put_container(&lock, &c).expect("put container");
    let err = store
        .remove_image(&lock, "child:1", RmiOptions::default())
        .expect_err("in use");
    assert!(matches!(err, StoreError::Conflict(m) if m.contains("container")));
    // Forced: untagged, but the image stays while the container needs it.
    let ev = store
        .remove_image(
            &lock,
            "child:1",
            RmiOptions {
                force: true,
                no_prune: false,
            },
        )
        .expect("forced");
    assert_eq!(ev, vec![RmiEvent::Untagged("child:1".into())]);
    assert!(store.get_image(&child.id).expect("get").is_some());
    assert!(store.has_blob(&child.layers[1].blob));
    store.remove_container(&lock, &c.id).expect("rm container");
    let ev = store.prune_images(&lock, false).expect("prune");
    assert!(ev.contains(&RmiEvent::Deleted(child.id)), "{ev:?}");
}

#[test]
fn cache_record_pins_blobs_until_removed() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let lock = store.lock().expect("lock");
    let l = put_layer(&store, &lock, &tar_with("c", "cache")[..]).expect("layer");
    store
        .cache_put(
            &lock,
            "key1",
            &CacheRecord {
                value: json!({"x": 1}),
                diff_ids: vec![l.diff_id],
                blobs: vec![l.blob],
                last_used: 0,
            },
        )
        .expect("put");
    store.gc(&lock).expect("gc");
    assert!(store.has_blob(&l.blob), "pinned by the cache");
    assert_eq!(
        store.cache_get("key1").expect("get").map(|r| r.value),
        Some(json!({"x": 1}))
    );
    assert_eq!(store.cache_list().expect("list").len(), 1);
    assert!(store.cache_remove(&lock, "key1").expect("remove"));
    let report = store.gc(&lock).expect("gc");
    assert_eq!(report.blobs_removed, vec![l.blob]);
    assert!(!store.has_blob(&l.blob));
}

#[test]
fn metadata_never_points_at_missing_blobs() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let lock = store.lock().expect("lock");
    let missing = Digest::of(b"never stored");
    let err = store
        .cache_put(
            &lock,
            "k",
            &CacheRecord {
                value: json!(null),
                diff_ids: vec![],
                blobs: vec![missing],
                last_used: 0,
            },
        )
        .expect_err("missing blob");
    assert!(matches!(err, StoreError::MissingBlob { .. }));
    let l = put_layer(&store, &lock, &tar_with("x", "y")[..]).expect("layer");
    let img = strata_store::ImageRecord {
        repo_digests: Vec::new(),
        id: missing,
        manifest: missing,
        manifest_size: 0,
        config_size: 0,
        layers: vec![l],
        created: 0,
        parent: None,
    };
    assert!(matches!(
        store.commit_image(&lock, &img, &[]),
        Err(StoreError::MissingBlob { .. })
    ));
    assert!(store.images().expect("images").is_empty());
    // The orphaned layer blob is exactly what GC frees.
    assert_eq!(store.gc(&lock).expect("gc").blobs_removed.len(), 1);
}

#[test]
fn resolve_accepts_ids_prefixes_names_and_digests() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let (base, _) = two_images(&store);
    for name in [
        base.id.to_string(),
        base.id.hex(),
        base.id.short(),
        "base:1".into(),
        "docker.io/library/base:1".into(),
        format!("base@{}", base.manifest),
    ] {
        assert_eq!(store.resolve(&name).expect(&name).id, base.id, "{name}");
    }
    assert!(matches!(
        store.resolve("base:2"),
        Err(StoreError::NoSuchImage(_))
    ));
    assert!(matches!(
        store.resolve("Bad Name"),
        Err(StoreError::NoSuchImage(_))
    ));
}

#[test]
fn import_writes_the_given_config_and_defaults_path() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let tarp = dir.path().join("root.tar");
    std::fs::write(&tarp, tar_with("bin/x", "x")).expect("write");
    let lock = store.lock().expect("lock");
    let given = json!({"Cmd": ["/bin/sh", "-c", "echo hi"], "WorkingDir": "/srv"});
    let img = strata_store::import_rootfs(&store, &lock, &tarp, given, None, Some("imp:1"))
        .expect("import");
    let cfg = store.image_config(&img).expect("config");
    assert_eq!(cfg["config"]["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
    assert_eq!(cfg["config"]["WorkingDir"], json!("/srv"));
    assert_eq!(
        cfg["config"]["Env"],
        json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"])
    );
    // An Env of its own is kept as given: no PATH is added to it.
    let img =
        strata_store::import_rootfs(&store, &lock, &tarp, json!({"Env": ["A=1"]}), None, None)
            .expect("import");
    let cfg = store.image_config(&img).expect("config");
    assert_eq!(cfg["config"]["Env"], json!(["A=1"]));
}

#[test]
fn ctx_meta_round_trips() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let m = CtxMeta {
        dev: 1,
        ino: 2,
        size: 3,
        mtime_ns: 4,
        ctime_ns: 5,
        blake3: "ab".into(),
    };
    store
        .ctx_meta_put_batch(&[("a/b".into(), m.clone())])
        .expect("put");
    assert_eq!(store.ctx_meta_get("a/b").expect("get"), Some(m));
    assert_eq!(store.ctx_meta_get("nope").expect("get"), None);
}

#[test]
fn references_normalise_like_docker() {
    use strata_store::{familiar, normalize_reference as n};
    assert_eq!(n("app").expect("app"), "docker.io/library/app:latest");
    assert_eq!(n("user/app:1").expect("u"), "docker.io/user/app:1");
    assert_eq!(n("localhost:5000/x").expect("l"), "localhost:5000/x:latest");
    assert_eq!(familiar("docker.io/library/app:1"), "app:1");
    assert_eq!(familiar("localhost:5000/x:y"), "localhost:5000/x:y");
    assert!(n("App").is_err());
    assert!(n("a:b:c").is_err());
    assert!(n("").is_err());
}

#[test]
fn layer_encodings_live_exactly_as_long_as_their_layer() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let (base, child) = two_images(&store);
    let lock = store.lock().expect("lock");
    let zstd = strata_oci::Compression::Zstd { level: 9 };
    let a = &base.layers[0];
    let b = &child.layers[1];
    // Stand-ins for re-encoded blobs: any stored content does.
    let enc = |diff_id: Digest, content: &str| {
        let blob = store
            .put_blob_bytes(&lock, content.as_bytes())
            .expect("blob");
        let rec = strata_store::EncodedLayer {
            diff_id,
            blob,
            size: content.len() as u64,
        };
        store.put_layer_encoding(&lock, zstd, &rec).expect("record");
        rec
    };
    let ea = enc(a.diff_id, "a as zstd");
    let eb = enc(b.diff_id, "b as zstd");
    assert_eq!(
        store.layer_encoding(&a.diff_id, zstd).expect("lookup"),
        Some(ea.clone())
    );
    // Another level is another encoding.
    let nine_gzip = strata_oci::Compression::Gzip { level: 9 };
    assert_eq!(
        store.layer_encoding(&a.diff_id, nine_gzip).expect("lookup"),
        None
    );
    // GC keeps them while their layers live, and check sees no loose blobs.
    store.gc(&lock).expect("gc");
    assert!(store.has_blob(&ea.blob) && store.has_blob(&eb.blob));
    assert_eq!(
        store.check(&lock, false).expect("check").unreferenced_blobs,
        0
    );
    // The child goes (its parent stays, tagged): b's encoding goes with b.
    store
        .remove_image(&lock, "child:1", RmiOptions::default())
        .expect("rmi child");
    assert!(store.has_blob(&ea.blob));
    assert!(!store.has_blob(&eb.blob));
    assert_eq!(
        store.layer_encoding(&b.diff_id, zstd).expect("lookup"),
        None
    );
    // A record whose blob vanished is not returned, and GC drops it.
    std::fs::remove_file(store.blob_path(&ea.blob)).expect("rm");
    assert_eq!(
        store.layer_encoding(&a.diff_id, zstd).expect("lookup"),
        None
    );
    store.gc(&lock).expect("gc");
    // An encoding of a blob that is not stored is refused.
    let missing = strata_store::EncodedLayer {
        diff_id: a.diff_id,
        blob: Digest::of(b"never stored"),
        size: 1,
    };
    assert!(matches!(
        store.put_layer_encoding(&lock, zstd, &missing),
        Err(StoreError::MissingBlob { .. })
    ));
}

/// The whole `source()` chain of an error, as the CLI prints it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A tar of `(name, content)` regular files.
fn files_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *content).expect("append");
    }
    b.into_inner().expect("tar")
}

fn load(store: &Store, archive: &[u8]) -> Result<Vec<strata_store::LoadedImage>, StoreError> {
    let lock = store.lock().expect("lock");
    strata_store::load_archive(store, &lock, std::path::Path::new("test.tar"), archive)
}

#[test]
fn load_of_an_archive_listing_no_image_fails() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let err = load(&store, &files_tar(&[("manifest.json", b"[]")])).expect_err("loads nothing");
    assert!(chain(&err).contains("contains no image"), "{}", chain(&err));
    let err = load(
        &store,
        &files_tar(&[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", br#"{"schemaVersion":2,"manifests":[]}"#),
        ]),
    )
    .expect_err("loads nothing");
    assert!(chain(&err).contains("contains no image"), "{}", chain(&err));
}

#[test]
fn load_refuses_a_layer_that_would_not_unpack() {
    // One entry named `../evil` (written raw: tar builders refuse `..`).
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..7].copy_from_slice(b"../evil");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_cksum();
    let mut layer = h.as_bytes().to_vec();
    layer.extend([0u8; 1024]);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
    })
    .to_string();
    let manifest =
        json!([{"Config": "config.json", "RepoTags": ["bad:1"], "Layers": ["layer.tar"]}])
            .to_string();
    let archive = files_tar(&[
        ("manifest.json", manifest.as_bytes()),
        ("config.json", config.as_bytes()),
        ("layer.tar", &layer),
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let err = load(&store, &archive).expect_err("refused");
    let msg = chain(&err);
    assert!(
        msg.contains("cannot be unpacked") && msg.contains("../evil"),
        "{msg}"
    );
    assert!(store.resolve("bad:1").is_err());
    assert_eq!(blobs(&store), 0, "nothing of the refused archive stays");
}

#[test]
fn load_names_the_target_of_a_link_out_of_the_archive() {
    let manifest =
        json!([{"Config": "config.json", "RepoTags": ["x:1"], "Layers": []}]).to_string();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", manifest.as_bytes())
        .expect("append");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, "config.json", "../../etc/passwd")
        .expect("link");
    let archive = b.into_inner().expect("tar");
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path()).expect("open");
    let err = load(&store, &archive).expect_err("refused");
    let msg = chain(&err);
    assert!(
        msg.contains("config.json") && msg.contains("../../etc/passwd"),
        "{msg}"
    );
}

/// Scratch of a live owner survives GC; what a killed owner left (its lock
/// file no longer held, or no lock file at all) is reported by `check`,
/// removed by GC, and counted with its kind and size.
#[test]
fn gc_removes_stale_scratch_and_keeps_live_scratch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let live = store.scratch_dir("build").expect("scratch");
    std::fs::write(live.path().join("data"), vec![1u8; 10_000]).expect("write");
    // What a SIGKILLed build leaves: the directory and its lock file,
    // which nobody holds any more.
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(tmp.join("build-dead1")).expect("mkdir");
    std::fs::write(tmp.join("build-dead1/data"), vec![1u8; 20_000]).expect("write");
    std::fs::write(tmp.join("build-dead1.lock"), b"").expect("lock file");
    // An older strata's scratch: no lock file at all.
    std::fs::create_dir(tmp.join("rootfs-old")).expect("mkdir");

    let lock = store.lock().expect("lock");
    let check = store.check(&lock, false).expect("check");
    let kinds: Vec<&str> = check
        .stale_scratch
        .entries
        .iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "{check:?}");
    assert!(
        kinds.contains(&"build") && kinds.contains(&"rootfs"),
        "{kinds:?}"
    );
    assert!(check.stale_scratch.bytes() >= 20_000, "{check:?}");

    let report = store.gc(&lock).expect("gc");
    assert_eq!(report.scratch.entries.len(), 2, "{report:?}");
    assert!(report.scratch.bytes() >= 20_000, "{report:?}");
    assert!(live.path().join("data").is_file(), "live scratch kept");
    let mut left: Vec<String> = std::fs::read_dir(&tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let name = live
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert_eq!(left, vec![name.clone(), format!("{name}.lock")]);

    drop(live);
    let left: Vec<_> = std::fs::read_dir(&tmp).expect("tmp").flatten().collect();
    assert!(
        left.is_empty(),
        "dropping removes the dir and its lock: {left:?}"
    );
    assert!(
        store
            .check(&lock, false)
            .expect("check")
            .stale_scratch
            .entries
            .is_empty()
    );
}

/// A one-entry layer tar: `name` with `content` and modification time `mtime`.
fn tar_at(name: &str, content: &str, mtime: u64) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, content.as_bytes())
        .expect("append");
    b.into_inner().expect("tar")
}

#[test]
fn diff_reads_layers_from_their_indexes_mtimes_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    let lock = store.lock().expect("lock");
    let image = |layers: Vec<strata_store::LayerRecord>, n: i64| {
        write_image(&store, &lock, empty_config(n), layers, None, &[]).expect("image")
    };
    let older = put_layer(&store, &lock, &tar_at("f", "same", 100)[..]).expect("layer");
    let newer = put_layer(&store, &lock, &tar_at("f", "same", 200)[..]).expect("layer");
    let added = put_layer(&store, &lock, &tar_at("g", "new", 100)[..]).expect("layer");
    let a = image(vec![older.clone()], 1);
    let b = image(vec![newer.clone(), added.clone()], 2);
    let diff = |x, y| -> Vec<String> {
        strata_store::diff_images(&store, x, y)
            .expect("diff")
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    // Only the mtime differs: still a change.
    assert_eq!(diff(&a, &b), ["C /f", "A /g"]);
    let top: Vec<String> = strata_store::diff_top_layer(&store, &b)
        .expect("diff")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(top, ["A /g"]);
    // The indexes made for that are all a diff reads from now on: with the
    // layers' tars emptied, the answer is the same.
    for l in [&older, &newer, &added] {
        std::fs::write(store.blob_path(&l.blob), b"").expect("truncate");
    }
    assert_eq!(diff(&a, &b), ["C /f", "A /g"]);
}
