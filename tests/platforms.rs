//! Several `--platform`s at once: RUN steps of a foreign platform under
//! qemu-user, the index pushed to the test registry and read back by its
//! real consumers (`docker buildx imagetools`, skopeo, `strata pull`), and
//! the outputs that hold several platforms (`type=tar`) or refuse them
//! (`type=docker`), and `--cache-to` of every platform.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use sha2::Digest as _;

const BOTH: &str = "linux/amd64,linux/arm64";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(env.dir.path().join("docker")).expect("mkdir");
        std::fs::write(env.dir.path().join("docker/config.json"), "{}").expect("write");
        env
    }

    /// A context folder `name` holding `files`.
    fn context(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let ctx = self.dir.path().join(name);
        std::fs::create_dir_all(&ctx).expect("mkdir");
        for (f, body) in files {
            std::fs::write(ctx.join(f), body).expect("write");
        }
        ctx
    }

    fn run(&self, store: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .env("STRATA_ROOT", self.dir.path().join(store))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    }

    /// Runs strata on `store`; its stderr (the progress) when it succeeds.
    fn ok(&self, store: &str, args: &[&str]) -> String {
        let o = self.run(store, args);
        assert!(
            o.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
}

/// The arm64 busybox fixture, with qemu-aarch64 registered to run it; the
/// amd64 one runs natively (on an x86_64 machine only: the fixtures are
/// the two architectures' busybox).
fn cross_fixtures(test: &str) -> Option<(PathBuf, PathBuf)> {
    let amd64 = strata_testutil::busybox_tar(test)?;
    let arm64 = strata_testutil::env_or_skip(test, "STRATA_TEST_BUSYBOX_ARM64_TAR")?;
    if std::env::consts::ARCH != "x86_64" {
        strata_testutil::skip(
            test,
            "the fixtures are amd64 and arm64: needs an x86_64 machine",
        );
        return None;
    }
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists() {
        strata_testutil::skip(
            test,
            "no qemu-aarch64 binfmt_misc handler (.ci/testenv up registers it)",
        );
        return None;
    }
    Some((amd64, PathBuf::from(arm64)))
}

fn imagetools(config: &Path, name: &str) -> Value {
    let o = Command::new("docker")
        .args(["buildx", "imagetools", "inspect", "--raw", name])
        .env("DOCKER_CONFIG", config)
        .output()
        .expect("spawn docker");
    assert!(
        o.status.success(),
        "imagetools inspect {name}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("imagetools prints JSON")
}

fn skopeo(args: &[&str]) -> Vec<u8> {
    let o = Command::new("skopeo")
        .args(args)
        .output()
        .expect("spawn skopeo");
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// One file of a (possibly gzip-compressed) tar, by its path.
fn file_in_tar(bytes: &[u8], path: &str) -> Option<Vec<u8>> {
    let plain: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let name = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        if name.trim_start_matches("./") == path {
            let mut out = Vec::new();
            entry.read_to_end(&mut out).expect("read entry");
            return Some(out);
        }
    }
    None
}

/// `/arch` of the image for `arch` in the registry's `name`, copied out by
/// skopeo (its top layer holds the file).
fn arch_file(work: &Path, name: &str, arch: &str) -> String {
    let layout = work.join(format!("copied-{arch}"));
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
        &format!("docker://{name}"),
        &format!("oci:{}:x", layout.display()),
    ]);
    let blob = |d: &Value| {
        let hex = d.as_str().expect("digest").trim_start_matches("sha256:");
        std::fs::read(layout.join("blobs/sha256").join(hex)).expect("blob")
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("index json");
    let manifest: Value =
        serde_json::from_slice(&blob(&index["manifests"][0]["digest"])).expect("manifest");
    let config: Value =
        serde_json::from_slice(&blob(&manifest["config"]["digest"])).expect("config");
    assert_eq!(config["architecture"], arch, "{config}");
    let layers = manifest["layers"].as_array().expect("layers");
    let top = blob(&layers.last().expect("a layer")["digest"]);
    String::from_utf8(file_in_tar(&top, "arch").expect("/arch in the top layer")).expect("utf-8")
}

#[test]
fn multi_platform_push_runs_each_platform_and_reports_the_index() {
    let t = "multi_platform_push_runs_each_platform_and_reports_the_index";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let Some((amd64, arm64)) = cross_fixtures(t) else {
        return;
    };
    let env = Env::new();
    let ctx = env.context(
        "ctx",
        &[
            (
                "Dockerfile",
                b"FROM scratch AS build\n\
                  ARG TARGETARCH\n\
                  ADD busybox-$TARGETARCH.tar /\n\
                  RUN uname -m > /arch\n\
                  FROM scratch\n\
                  COPY shared.txt /shared.txt\n\
                  COPY --from=build /arch /arch\n",
            ),
            ("shared.txt", b"the same on every platform\n"),
            ("busybox-amd64.tar", &std::fs::read(amd64).expect("fixture")),
            ("busybox-arm64.tar", &std::fs::read(arm64).expect("fixture")),
        ],
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let name = format!("{reg}/platforms-{}-{nanos}:1", std::process::id());
    let meta_path = env.dir.path().join("meta.json");
    let iid_path = env.dir.path().join("iid");
    let log = env.ok(
        "store",
        &[
            "build",
            "--progress",
            "plain",
            "--insecure-registry",
            &reg,
            "--platform",
            BOTH,
            "-t",
            &name,
            "--push",
            "--metadata-file",
            meta_path.to_str().expect("utf-8"),
            "--iidfile",
            iid_path.to_str().expect("utf-8"),
            ctx.to_str().expect("utf-8"),
        ],
    );
    // The index as the registry serves it, read by buildx: both images and
    // an attestation manifest (buildx's default provenance) for each.
    let index = imagetools(&env.dir.path().join("docker"), &name);
    let manifests = index["manifests"].as_array().expect("manifests");
    let archs: Vec<&str> = manifests
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .map(|m| m["platform"]["architecture"].as_str().expect("arch"))
        .collect();
    assert_eq!(archs, ["amd64", "arm64"], "{index}");
    assert_eq!(manifests.len(), 4, "{index}");
    // The metadata file and --iidfile name the index the registry serves.
    let raw = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    let served = format!("sha256:{:x}", sha2::Sha256::digest(&raw));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("metadata file")).expect("json");
    assert_eq!(meta["containerimage.digest"], served.as_str(), "{meta}");
    let descriptor = &meta["containerimage.descriptor"];
    assert_eq!(descriptor["digest"], served.as_str(), "{meta}");
    assert_eq!(descriptor["size"], raw.len(), "{meta}");
    assert_eq!(
        descriptor["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{meta}"
    );
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");
    assert_eq!(std::fs::read_to_string(&iid_path).expect("iidfile"), served);
    // Each platform's RUN ran on that platform's CPU (arm64 under qemu).
    assert_eq!(arch_file(env.dir.path(), &name, "amd64"), "x86_64\n");
    assert_eq!(arch_file(env.dir.path(), &name, "arm64"), "aarch64\n");
    // The layer both platforms share (shared.txt) was sent once.
    let shared: Vec<&Value> = manifests
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .collect();
    let first_layer = |m: &Value| -> String {
        let hex = m["digest"]
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        let body = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--raw",
            &format!("docker://{}@sha256:{hex}", name.trim_end_matches(":1")),
        ]);
        let manifest: Value = serde_json::from_slice(&body).expect("manifest");
        manifest["layers"][0]["digest"]
            .as_str()
            .expect("layer digest")
            .to_owned()
    };
    let layer = first_layer(shared[0]);
    assert_eq!(layer, first_layer(shared[1]), "{index}");
    let short = &layer.trim_start_matches("sha256:")[..12];
    assert_eq!(
        log.lines().filter(|l| l.starts_with(short)).count(),
        1,
        "{short} reported more than once: {log}"
    );
    // `strata pull --platform` gets the arm64 image from the index.
    env.ok(
        "puller",
        &[
            "pull",
            "--insecure-registry",
            &reg,
            "--platform",
            "linux/arm64",
            &name,
        ],
    );
    let o = env.run("puller", &["inspect", &name]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let inspected: Value = serde_json::from_slice(&o.stdout).expect("inspect json");
    assert_eq!(inspected[0]["Architecture"], "arm64", "{inspected}");
}

/// A context over no base: each platform's image holds its TARGETARCH.
fn copy_only_context(env: &Env) -> PathBuf {
    env.context(
        "copy",
        &[
            (
                "Dockerfile",
                b"FROM scratch\nARG TARGETARCH\nCOPY $TARGETARCH.txt /arch.txt\nCOPY common.txt /common.txt\n",
            ),
            ("amd64.txt", b"amd64\n"),
            ("arm64.txt", b"arm64\n"),
            ("common.txt", b"common\n"),
        ],
    )
}

#[test]
fn tar_output_holds_a_folder_per_platform_and_docker_refuses_several() {
    let env = Env::new();
    let ctx = copy_only_context(&env);
    let ctx = ctx.to_str().expect("utf-8");
    let out = env.dir.path().join("out.tar");
    env.ok(
        "store",
        &[
            "build",
            "--platform",
            BOTH,
            "-o",
            &format!("type=tar,dest={}", out.display()),
            ctx,
        ],
    );
    let bytes = std::fs::read(&out).expect("tar");
    // As BuildKit's tar exporter: each platform's root under `os_arch/`.
    for arch in ["amd64", "arm64"] {
        let got = file_in_tar(&bytes, &format!("linux_{arch}/arch.txt"));
        assert_eq!(got.as_deref(), Some(format!("{arch}\n").as_bytes()));
        let common = file_in_tar(&bytes, &format!("linux_{arch}/common.txt"));
        assert_eq!(common.as_deref(), Some(&b"common\n"[..]));
    }
    let mut archive = tar::Archive::new(&bytes[..]);
    let folders: Vec<(String, u32)> = archive
        .entries()
        .expect("entries")
        .map(|e| e.expect("entry"))
        .filter(|e| e.header().entry_type().is_dir())
        .map(|e| {
            (
                e.path().expect("path").to_string_lossy().into_owned(),
                e.header().mode().expect("mode"),
            )
        })
        .filter(|(p, _)| p.trim_start_matches("./").matches('/').count() == 1)
        .collect();
    for arch in ["amd64", "arm64"] {
        assert!(
            folders.iter().any(
                |(p, m)| p.trim_start_matches("./") == format!("linux_{arch}/") && *m == 0o755
            ),
            "{folders:?}"
        );
    }
    // A docker-archive holds one image: refused before building, in
    // BuildKit's words.
    let o = env.run(
        "store",
        &[
            "build",
            "--platform",
            BOTH,
            "-o",
            &format!(
                "type=docker,dest={}",
                env.dir.path().join("d.tar").display()
            ),
            ctx,
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("docker exporter does not currently support exporting manifest lists"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Without a push, a multi-platform OCI output's index is what buildx
/// reports: `--iidfile` and the metadata file's `containerimage.digest`
/// and `containerimage.descriptor` name the index the layout's
/// `index.json` lists, and no single config digest is given.
#[test]
fn oci_output_with_several_platforms_reports_its_index() {
    let env = Env::new();
    let ctx = copy_only_context(&env);
    let ctx = ctx.to_str().expect("utf-8");
    let layout = env.dir.path().join("layout");
    let iid = env.dir.path().join("iid");
    let meta = env.dir.path().join("meta.json");
    env.ok(
        "store",
        &[
            "build",
            "--platform",
            BOTH,
            "--provenance=false",
            "-o",
            &format!("type=oci,tar=false,dest={}", layout.display()),
            "--iidfile",
            iid.to_str().expect("utf-8"),
            "--metadata-file",
            meta.to_str().expect("utf-8"),
            ctx,
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index.json"))
            .expect("json");
    let top = &index["manifests"][0];
    let digest = top["digest"].as_str().expect("digest").to_owned();
    let blob = std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..]))
        .expect("the index blob");
    let nested: Value = serde_json::from_slice(&blob).expect("index json");
    assert_eq!(
        nested["manifests"].as_array().map(Vec::len),
        Some(2),
        "{nested}"
    );
    assert_eq!(std::fs::read_to_string(&iid).expect("iidfile"), digest);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("metadata")).expect("json");
    assert_eq!(meta["containerimage.digest"], digest.as_str(), "{meta}");
    assert_eq!(meta["containerimage.descriptor"]["digest"], digest.as_str());
    assert_eq!(
        meta["containerimage.descriptor"]["size"].as_u64(),
        Some(blob.len() as u64)
    );
    assert_eq!(
        meta["containerimage.descriptor"]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert!(meta.get("containerimage.config.digest").is_none(), "{meta}");
}

#[test]
fn cache_to_with_several_platforms_holds_every_platform() {
    let env = Env::new();
    let ctx = copy_only_context(&env);
    let ctx = ctx.to_str().expect("utf-8");
    let cache = env.dir.path().join("cache");
    env.ok(
        "a",
        &[
            "build",
            "--platform",
            BOTH,
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
            ctx,
        ],
    );
    // A fresh store takes every platform's steps from the cache.
    let log = env.ok(
        "b",
        &[
            "build",
            "--progress",
            "plain",
            "--platform",
            BOTH,
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
            ctx,
        ],
    );
    assert!(log.contains("steps cached: 4"), "{log}");
}
