//! Provenance attestations and annotations, read back by their real
//! consumer: strata pushes to the plain test registry and `docker buildx
//! imagetools inspect` (which needs no builder) reads the index, the
//! attestation manifest and the SLSA predicate. OCI outputs are read from
//! the tar strata writes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
    reg: String,
}

impl Env {
    /// A store holding the busybox fixture as `busybox:latest`, a context
    /// with a two-line Dockerfile over it, and the registry's address.
    fn new(test: &str) -> Option<Env> {
        let reg = strata_testutil::registry(test)?;
        let tar = strata_testutil::busybox_tar(test)?;
        if !imagetools_available() {
            strata_testutil::skip(test, "docker buildx (imagetools) is not installed");
            return None;
        }
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
            reg,
        };
        std::fs::create_dir_all(env.ctx()).expect("mkdir");
        std::fs::create_dir_all(env.dir.path().join("docker")).expect("mkdir");
        std::fs::write(env.dir.path().join("docker/config.json"), "{}").expect("write");
        std::fs::write(
            env.ctx().join("Dockerfile"),
            "FROM busybox:latest\nARG FOO=bar\nCOPY a /a\n",
        )
        .expect("write");
        std::fs::write(env.ctx().join("a"), "a\n").expect("write");
        env.ok(&[
            "import",
            tar.to_str().expect("utf-8 path"),
            "busybox:latest",
        ]);
        Some(env)
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .current_dir(self.ctx())
            .env("STRATA_ROOT", self.dir.path().join("store"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
            .stdin(Stdio::null())
            .output()
            .expect("spawn strata")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "strata {args:?} should have failed");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Builds the context and pushes it as `REG/<unique>:1`; returns the name.
    fn push(&self, repo: &str, extra: &[&str]) -> String {
        let name = format!("{}/{}:1", self.reg, unique(repo));
        self.push_as(&name, extra);
        name
    }

    /// Builds the context and pushes it as `name`.
    fn push_as(&self, name: &str, extra: &[&str]) {
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--insecure-registry",
            &self.reg,
            "-t",
            name,
            "--push",
        ];
        args.extend_from_slice(extra);
        args.push(".");
        self.ok(&args);
    }

    fn imagetools(&self, name: &str, format: Option<&str>) -> Value {
        let mut c = Command::new("docker");
        c.args(["buildx", "imagetools", "inspect", name])
            .env("DOCKER_CONFIG", self.dir.path().join("docker"));
        match format {
            Some(f) => c.args(["--format", f]),
            None => c.arg("--raw"),
        };
        let o = c.output().expect("spawn docker");
        assert!(
            o.status.success(),
            "imagetools inspect {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("imagetools prints JSON")
    }
}

fn imagetools_available() -> bool {
    Command::new("docker")
        .args(["buildx", "version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A repository name no earlier run used (the registry outlives test runs).
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("attest-{name}-{}-{nanos}", std::process::id())
}

/// The files of a tar by name.
fn tar_files(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).expect("open tar"));
    for e in a.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        out.insert(name, data);
    }
    out
}

fn blob<'a>(files: &'a std::collections::BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("blob {digest} is in the layout"))
}

#[test]
fn pushed_max_provenance_reads_back_with_imagetools() {
    let t = "pushed_max_provenance_reads_back_with_imagetools";
    let Some(env) = Env::new(t) else { return };
    let name = env.push("max", &["--provenance=mode=max", "--build-arg", "FOO=baz"]);
    let index = env.imagetools(&name, None);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 2, "{index}");
    let image = &manifests[0];
    let att = &manifests[1];
    assert_eq!(image["platform"]["os"], "linux");
    // The image manifest is pushed as stored: the digest strata knows it by.
    let inspect: Value = serde_json::from_str(&env.ok(&["inspect", &name])).expect("inspect");
    let repo = name.rsplit_once(':').expect("tag").0;
    let pinned = format!("{repo}@{}", image["digest"].as_str().expect("digest"));
    assert!(
        inspect[0]["RepoDigests"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| *d == pinned.as_str())),
        "{pinned} not in {inspect}"
    );
    assert_eq!(att["platform"]["os"], "unknown");
    assert_eq!(att["platform"]["architecture"], "unknown");
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        att["annotations"]["vnd.docker.reference.digest"],
        image["digest"]
    );
    let slsa = &env.imagetools(&name, Some("{{ json .Provenance }}"))["SLSA"];
    assert_eq!(slsa["buildType"], "https://mobyproject.org/buildkit@v1");
    let params = &slsa["invocation"]["parameters"];
    assert_eq!(params["frontend"], "dockerfile.v0");
    assert_eq!(params["args"]["build-arg:FOO"], "baz");
    assert_eq!(params["locals"][0]["name"], "context");
    assert_eq!(
        slsa["invocation"]["configSource"]["entryPoint"],
        "Dockerfile"
    );
    let material = &slsa["materials"][0];
    assert!(
        material["uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("pkg:docker/busybox@latest?platform=linux%2F")),
        "{material}"
    );
    assert_eq!(
        material["digest"]["sha256"].as_str().map(str::len),
        Some(64)
    );
    // The dates are SOURCE_DATE_EPOCH's, so a rebuild writes the same bytes.
    assert_eq!(slsa["metadata"]["buildStartedOn"], "2023-11-14T22:13:20Z");
    let data = slsa["metadata"]["https://mobyproject.org/buildkit@v1#metadata"]["source"]["infos"]
        [0]["data"]
        .as_str()
        .expect("the Dockerfile is in max mode's source infos");
    assert!(!data.is_empty());
}

#[test]
fn default_push_carries_min_provenance_and_false_turns_it_off() {
    let t = "default_push_carries_min_provenance_and_false_turns_it_off";
    let Some(env) = Env::new(t) else { return };
    let meta_path = env.dir.path().join("meta.json");
    let meta_arg = meta_path.to_str().expect("utf-8 path");
    let name = env.push(
        "default",
        &["--build-arg", "FOO=baz", "--metadata-file", meta_arg],
    );
    let slsa = &env.imagetools(&name, Some("{{ json .Provenance }}"))["SLSA"];
    // The metadata file has what buildx records: the pushed index's digest
    // and the provenance without its `metadata`.
    let meta: Value =
        serde_json::from_slice(&std::fs::read(&meta_path).expect("metadata file")).expect("json");
    let recorded = &meta["buildx.build.provenance"];
    assert_eq!(recorded["buildType"], "https://mobyproject.org/buildkit@v1");
    assert!(recorded["metadata"].is_null(), "{recorded}");
    assert_eq!(recorded["materials"], slsa["materials"]);
    let digest = meta["containerimage.digest"].as_str().expect("digest");
    let by_digest = format!("{}@{digest}", name.rsplit_once(':').expect("tag").0);
    assert_eq!(
        env.imagetools(&by_digest, None)["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    // mode=min: build arguments are left out, and the predicate says so.
    assert!(slsa["invocation"]["parameters"]["args"].is_null(), "{slsa}");
    assert_eq!(slsa["metadata"]["completeness"]["parameters"], false);
    let plain = env.push("off", &["--provenance=false"]);
    let raw = env.imagetools(&plain, None);
    assert_eq!(
        raw["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "no attestation: the tag names the image manifest itself"
    );
}

#[test]
fn rebuilt_provenance_index_is_identical() {
    let t = "rebuilt_provenance_index_is_identical";
    let Some(env) = Env::new(t) else { return };
    // The subjects name the image, so the same name both times; the build
    // cache and the built image go in between, so the steps run again.
    let name = env.push("repro", &["--provenance=mode=max"]);
    let first = env.imagetools(&name, None);
    env.ok(&["rmi", &name]);
    env.ok(&["prune", "-f"]);
    env.push_as(&name, &["--provenance=mode=max"]);
    assert_eq!(first, env.imagetools(&name, None));
}

#[test]
fn slsa_v1_in_an_oci_output() {
    let t = "slsa_v1_in_an_oci_output";
    let Some(env) = Env::new(t) else { return };
    let out = env.dir.path().join("out.tar");
    let dest = format!("type=oci,dest={}", out.display());
    env.ok(&[
        "build",
        "-q",
        "-t",
        "app:1",
        "--attest",
        "type=provenance,mode=min,version=v1",
        "-o",
        &dest,
        ".",
    ]);
    let files = tar_files(&out);
    let top: Value = serde_json::from_slice(&files["index.json"]).expect("index.json");
    let index: Value = serde_json::from_slice(blob(
        &files,
        top["manifests"][0]["digest"].as_str().expect("d"),
    ))
    .expect("index");
    let att = &index["manifests"][1];
    assert_eq!(
        att["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    let m: Value = serde_json::from_slice(blob(&files, att["digest"].as_str().expect("d")))
        .expect("attestation manifest");
    let layer = &m["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        layer["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );
    let stmt: Value = serde_json::from_slice(blob(&files, layer["digest"].as_str().expect("d")))
        .expect("statement");
    assert_eq!(stmt["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(stmt["subject"][0]["digest"]["sha256"], {
        let d = index["manifests"][0]["digest"].as_str().expect("d");
        d.trim_start_matches("sha256:").to_owned()
    });
    assert!(
        stmt["subject"][0]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("pkg:docker/app@1?platform=linux%2F"))
    );
    let def = &stmt["predicate"]["buildDefinition"];
    assert_eq!(
        def["buildType"],
        "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md"
    );
    assert_eq!(
        def["externalParameters"]["request"]["frontend"],
        "dockerfile.v0"
    );
    assert_eq!(
        stmt["predicate"]["runDetails"]["metadata"]["buildkit_completeness"]["request"],
        true
    );
    // Single platform, buildx's default (inline-only) provenance: an OCI
    // output keeps the plain manifest, as BuildKit's oci exporter does.
    let plain = env.dir.path().join("plain.tar");
    env.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={}", plain.display()),
        ".",
    ]);
    let top: Value = serde_json::from_slice(&tar_files(&plain)["index.json"]).expect("index");
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn annotations_land_where_buildx_puts_them() {
    let t = "annotations_land_where_buildx_puts_them";
    let Some(env) = Env::new(t) else { return };
    let name = env.push(
        "annotated",
        &[
            "--annotation",
            "index:org.opencontainers.image.vendor=strata",
            "--annotation",
            "org.opencontainers.image.title=app",
            "--annotation",
            "manifest-descriptor:desc=yes",
        ],
    );
    let index = env.imagetools(&name, None);
    assert_eq!(
        index["annotations"]["org.opencontainers.image.vendor"],
        "strata"
    );
    assert_eq!(index["manifests"][0]["annotations"]["desc"], "yes");
    let image_ref = format!(
        "{}@{}",
        name.rsplit_once(':').expect("tag").0,
        index["manifests"][0]["digest"].as_str().expect("digest")
    );
    let manifest = env.imagetools(&image_ref, None);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.title"],
        "app"
    );
    // A single image without attestations is no index: index annotations
    // are refused with BuildKit's words.
    let out = env.dir.path().join("one.tar");
    let err = env.fails(&[
        "build",
        "-q",
        "--provenance=false",
        "--annotation",
        "index:k=v",
        "-o",
        &format!("type=oci,dest={}", out.display()),
        ".",
    ]);
    assert!(
        err.contains("index annotations not supported for single platform export"),
        "{err}"
    );
    let err = env.fails(&["build", "-q", "--annotation", "blob:k=v", "."]);
    assert!(err.contains("unknown annotation type \"blob\""), "{err}");
}

#[test]
fn local_output_gets_provenance_json_unless_inline_only() {
    let t = "local_output_gets_provenance_json_unless_inline_only";
    let Some(env) = Env::new(t) else { return };
    let dest = env.dir.path().join("rootfs");
    let spec = format!("type=local,dest={}", dest.display());
    env.ok(&["build", "-q", "--provenance=true", "-o", &spec, "."]);
    let stmt: Value = serde_json::from_slice(
        &std::fs::read(dest.join("provenance.json")).expect("provenance.json"),
    )
    .expect("statement");
    assert_eq!(stmt["predicateType"], "https://slsa.dev/provenance/v0.2");
    // Every regular file of the output is a subject, with its sha256.
    let a = stmt["subject"]
        .as_array()
        .expect("subjects")
        .iter()
        .find(|s| s["name"] == "a")
        .expect("the copied file is a subject");
    assert_eq!(
        a["digest"]["sha256"],
        "87428fc522803d31065e7bce3cf03fe475096631e5e07bbd7a0fde60c4cf25c7"
    );
    // buildx's default (inline-only) provenance writes no file.
    let plain = env.dir.path().join("plain");
    let spec = format!("type=local,dest={}", plain.display());
    env.ok(&["build", "-q", "-o", &spec, "."]);
    assert!(plain.join("a").exists());
    assert!(!plain.join("provenance.json").exists());
}
