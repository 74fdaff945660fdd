//! Archives against the real consumers: `docker load` + `docker run`,
//! `skopeo inspect`/`copy`, `umoci unpack`; and our own reader.
//!
//! Tests needing a service or fixture skip loudly without it (see
//! strata-testutil). Run: `cargo test -p strata-oci --test archives` with
//! STRATA_TEST_BUSYBOX_TAR and STRATA_TEST_DOCKER_HOST set.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use strata_oci::apply::{DeleteWhiteouts, apply_layer};
use strata_oci::archive::{
    ArchiveFormat, ArchiveImage, read_archive, write_archive, write_oci_dir,
};
use strata_oci::compress::Compression;
use strata_oci::image::{
    ANNOTATION_CREATED, Descriptor, ImageConfig, MEDIA_TYPE_OCI_CONFIG, Manifest, rfc3339,
};
use strata_oci::layer::{LayerOptions, changes_for_tree, layer_from_tar, write_layer};
use strata_oci::{BlobStore, Change};

const EPOCH: i64 = 1_700_000_000;

struct Built {
    image: ArchiveImage,
    /// Uncompressed layer tars, in order.
    tars: Vec<Vec<u8>>,
}

fn put_layer(
    store: &BlobStore,
    info_and_blob: (strata_oci::layer::LayerInfo, Vec<u8>),
) -> Descriptor {
    let (info, blob) = info_and_blob;
    let (d, n) = store.put_bytes(&blob).unwrap();
    assert_eq!((d, n), (info.digest, info.size));
    Descriptor::new(info.media_type, d, n)
}

fn uncompressed(store: &BlobStore, d: &Descriptor) -> Vec<u8> {
    let (_, mut r) =
        strata_oci::compress::decompress(store.open_verified(&d.digest).unwrap()).unwrap();
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// busybox base + a layer with /hello.txt, /gone, /dir/old + a layer deleting
/// /gone and making /dir opaque with /dir/new.
fn build(store: &BlobStore, base_tar: &Path, compression: Compression) -> Built {
    let opts = LayerOptions {
        compression,
        epoch: Some(EPOCH),
        threads: 0,
        owners: None,
    };
    let mut cfg = ImageConfig::host();
    let created = rfc3339(EPOCH).unwrap();
    cfg.created = Some(created.clone());
    let mut layers = Vec::new();

    let mut blob = Vec::new();
    let info = layer_from_tar(std::fs::File::open(base_tar).unwrap(), &opts, &mut blob).unwrap();
    cfg.push_step(
        Some(info.diff_id),
        Some(created.clone()),
        "ADD busybox.tar / # buildkit",
    );
    layers.push(put_layer(store, (info, blob)));

    let l1 = tempfile::tempdir().unwrap();
    std::fs::write(l1.path().join("hello.txt"), "hello from strata\n").unwrap();
    std::fs::write(l1.path().join("gone"), "deleted later\n").unwrap();
    std::fs::create_dir_all(l1.path().join("dir/old")).unwrap();
    std::fs::write(l1.path().join("dir/old/f"), "old\n").unwrap();
    let mut blob = Vec::new();
    let info = write_layer(
        l1.path(),
        &changes_for_tree(l1.path()).unwrap(),
        &opts,
        &mut blob,
    )
    .unwrap();
    cfg.push_step(
        Some(info.diff_id),
        Some(created.clone()),
        "COPY . / # buildkit",
    );
    layers.push(put_layer(store, (info, blob)));

    let l2 = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(l2.path().join("dir")).unwrap();
    std::fs::write(l2.path().join("dir/new"), "new\n").unwrap();
    let changes = [
        Change::delete("gone"),
        Change::opaque_dir("dir"),
        Change::upsert("dir/new"),
    ];
    let mut blob = Vec::new();
    let info = write_layer(l2.path(), &changes, &opts, &mut blob).unwrap();
    cfg.push_step(
        Some(info.diff_id),
        Some(created.clone()),
        "RUN /bin/sh -c rm -rf /gone /dir && ... # buildkit",
    );
    layers.push(put_layer(store, (info, blob)));

    cfg.config.env = Some(vec!["PATH=/bin".into()]);
    cfg.config.cmd = Some(vec![
        "/bin/sh".into(),
        "-c".into(),
        "cat /hello.txt; ls /dir; test -e /gone || echo no-gone".into(),
    ]);
    cfg.push_step(
        None,
        Some(created.clone()),
        "CMD [\"/bin/sh\" \"-c\" \"...\"]",
    );
    let (cd, cn) = store.put_bytes(&cfg.to_json()).unwrap();
    let mut manifest = Manifest::oci(Descriptor::new(MEDIA_TYPE_OCI_CONFIG, cd, cn), layers);
    manifest
        .annotations
        .insert(ANNOTATION_CREATED.into(), created);
    let tars = manifest
        .layers
        .iter()
        .map(|l| uncompressed(store, l))
        .collect();
    Built {
        image: ArchiveImage {
            manifest,
            names: vec!["strata-oci-test:latest".into()],
            descriptor_annotations: Default::default(),
        },
        tars,
    }
}

fn fixture(test: &str) -> Option<PathBuf> {
    strata_testutil::busybox_tar(test)
}

fn have(tool: &str, test: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        strata_testutil::skip(test, &format!("{tool} is not installed"));
    }
    ok
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn archives_round_trip_through_our_reader() {
    let Some(base) = fixture("archives_round_trip_through_our_reader") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let built = build(&store, &base, Compression::default());
    for format in [ArchiveFormat::Oci, ArchiveFormat::Docker] {
        let path = tmp.path().join(format!("{format:?}.tar"));
        write_archive(
            std::fs::File::create(&path).unwrap(),
            &store,
            std::slice::from_ref(&built.image),
            format,
        )
        .unwrap();
        // Deterministic: writing twice gives the same bytes.
        let mut again = Vec::new();
        write_archive(
            &mut again,
            &store,
            std::slice::from_ref(&built.image),
            format,
        )
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), again);
        let other = BlobStore::open(tmp.path().join(format!("load-{format:?}"))).unwrap();
        let images = read_archive(&path, &other).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(
            images[0]
                .manifest
                .layers
                .iter()
                .map(|l| l.digest)
                .collect::<Vec<_>>(),
            built
                .image
                .manifest
                .layers
                .iter()
                .map(|l| l.digest)
                .collect::<Vec<_>>()
        );
        assert_eq!(
            images[0].manifest.config.digest,
            built.image.manifest.config.digest
        );
        assert!(
            images[0]
                .names
                .iter()
                .any(|n| n.contains("strata-oci-test")),
            "{:?}",
            images[0].names
        );
        let mut blobs = other.list().unwrap();
        blobs.sort();
        assert_eq!(blobs.len(), 5, "manifest, config, 3 layers, nothing else");
    }
    let dir = tmp.path().join("layout");
    write_oci_dir(&dir, &store, std::slice::from_ref(&built.image)).unwrap();
    let other = BlobStore::open(tmp.path().join("load-dir")).unwrap();
    assert_eq!(
        read_archive(&dir, &other).unwrap()[0].manifest,
        built.image.manifest
    );
}

#[test]
fn corrupt_archive_is_refused() {
    let Some(base) = fixture("corrupt_archive_is_refused") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let built = build(&store, &base, Compression::Uncompressed);
    let dir = tmp.path().join("layout");
    write_oci_dir(&dir, &store, std::slice::from_ref(&built.image)).unwrap();
    let victim = dir
        .join("blobs/sha256")
        .join(built.image.manifest.layers[1].digest.hex());
    let mut data = std::fs::read(&victim).unwrap();
    data[600] ^= 1;
    std::fs::write(&victim, data).unwrap();
    let other = BlobStore::open(tmp.path().join("load")).unwrap();
    let err = read_archive(&dir, &other).unwrap_err();
    assert!(
        err.to_string()
            .contains(&built.image.manifest.layers[1].digest.to_string()),
        "{err}"
    );
}

#[test]
fn docker_loads_and_runs_our_archive() {
    let test = "docker_loads_and_runs_our_archive";
    let Some(base) = fixture(test) else { return };
    let Some(host) = strata_testutil::docker_host(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let built = build(&store, &base, Compression::default());
    let path = tmp.path().join("docker.tar");
    write_archive(
        std::fs::File::create(&path).unwrap(),
        &store,
        std::slice::from_ref(&built.image),
        ArchiveFormat::Docker,
    )
    .unwrap();
    let docker = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", &host).args(args);
        c
    };
    let loaded = run(docker(&["load", "-i"]).arg(&path));
    assert!(loaded.contains("strata-oci-test:latest"), "{loaded}");
    let out = run(&mut docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        "strata-oci-test:latest",
    ]));
    // CMD output; /dir holds only the new file (opaque), /gone is deleted.
    assert_eq!(out, "hello from strata\nnew\nno-gone\n");
    let id = run(&mut docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "strata-oci-test:latest",
    ]));
    assert_eq!(id.trim(), built.image.manifest.config.digest.to_string());
    // The lower layer still carries what the upper one deleted.
    let lower = entry_names(&built.tars[1]);
    assert!(
        lower.contains(&"gone".to_owned()) && lower.contains(&"dir/old/f".to_owned()),
        "{lower:?}"
    );
    let upper = entry_names(&built.tars[2]);
    assert!(
        upper.contains(&".wh.gone".to_owned()) && upper.contains(&"dir/.wh..wh..opq".to_owned()),
        "{upper:?}"
    );
    // And we read back what `docker save` writes (legacy layout on 20.10).
    let saved = tmp.path().join("saved.tar");
    run(docker(&["save", "-o"])
        .arg(&saved)
        .arg("strata-oci-test:latest"));
    let other = BlobStore::open(tmp.path().join("from-docker")).unwrap();
    let images = read_archive(&saved, &other).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].names, ["strata-oci-test:latest"]);
    assert_eq!(
        images[0].config.rootfs.diff_ids,
        strata_oci::image::ImageConfig::from_json(
            &store
                .read_verified(&built.image.manifest.config.digest)
                .unwrap()
        )
        .unwrap()
        .rootfs
        .diff_ids
    );
    run(&mut docker(&["rmi", "strata-oci-test:latest"]));
}

fn entry_names(tar_bytes: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(tar_bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect()
}

#[test]
fn skopeo_accepts_our_oci_archive() {
    let test = "skopeo_accepts_our_oci_archive";
    let Some(base) = fixture(test) else { return };
    if !have("skopeo", test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    for c in [Compression::default(), Compression::Zstd { level: 3 }] {
        let built = build(&store, &base, c);
        let path = tmp.path().join(format!("oci-{c}.tar"));
        write_archive(
            std::fs::File::create(&path).unwrap(),
            &store,
            std::slice::from_ref(&built.image),
            ArchiveFormat::Oci,
        )
        .unwrap();
        let json = run(Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci-archive:{}", path.display())));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["Layers"].as_array().map(Vec::len), Some(3), "{json}");
        let dest = tmp.path().join(format!("copy-{c}"));
        run(Command::new("skopeo")
            .args(["copy", "--quiet"])
            .arg(format!("oci-archive:{}", path.display()))
            .arg(format!("dir:{}", dest.display())));
        for l in &built.image.manifest.layers {
            assert!(
                dest.join(l.digest.hex()).exists(),
                "skopeo copied layer {}",
                l.digest
            );
        }
    }
}

#[test]
fn umoci_unpack_matches_our_applier() {
    let test = "umoci_unpack_matches_our_applier";
    let Some(base) = fixture(test) else { return };
    if !have("umoci", test) || !strata_testutil::require_root(test) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = BlobStore::open(tmp.path().join("store")).unwrap();
    let built = build(&store, &base, Compression::default());
    let layout = tmp.path().join("layout");
    write_oci_dir(&layout, &store, std::slice::from_ref(&built.image)).unwrap();
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle));
    let ours = tmp.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    for t in &built.tars {
        apply_layer(&t[..], &ours, &mut DeleteWhiteouts).unwrap();
    }
    assert_eq!(tree(&bundle.join("rootfs")), tree(&ours));
}

/// path, type, mode, uid, gid, content or link target of every entry.
fn tree(root: &Path) -> Vec<String> {
    walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let what = if m.is_symlink() {
                format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
            } else if m.is_file() {
                strata_oci::Digest::of(&std::fs::read(e.path()).unwrap()).short()
            } else {
                String::new()
            };
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let mode = if m.is_symlink() { 0 } else { m.mode() };
            format!("{rel} {mode:o} {}:{} {what}", m.uid(), m.gid())
        })
        .collect()
}

#[test]
fn same_inputs_give_the_same_image_digest() {
    let Some(base) = fixture("same_inputs_give_the_same_image_digest") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let digests: Vec<_> = (0..2)
        .map(|i| {
            // Different store paths, files written at different wall-clock
            // times (all after EPOCH, so clamped).
            std::thread::sleep(std::time::Duration::from_millis(1100 * i));
            let store = BlobStore::open(tmp.path().join(format!("store{i}"))).unwrap();
            let built = build(&store, &base, Compression::default());
            let mut out = Vec::new();
            write_archive(
                &mut out,
                &store,
                std::slice::from_ref(&built.image),
                ArchiveFormat::Oci,
            )
            .unwrap();
            (
                strata_oci::Digest::of(&built.image.manifest.to_json()),
                strata_oci::Digest::of(&out),
            )
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}
