//! End-to-end tests of pull, push, login and build-with-registry against the
//! real `docker-registry` instances `.ci/testenv` starts (one plain HTTP, one
//! TLS with a self-signed CA and htpasswd Basic auth), through the real
//! `strata` binary, with skopeo as the independent judge of what we pushed.
//! Faults (dropped connections, corrupt bytes, 503s, a Bearer token service)
//! come from a small proxy in front of the real registry (`fault_proxy`).

mod fault_proxy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    docker_config: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        let docker_config = dir.path().join("docker");
        std::fs::create_dir_all(&work).expect("mkdir");
        Env {
            _dir: dir,
            root,
            work,
            docker_config,
        }
    }

    /// A second, empty store sharing nothing with this one.
    fn other_store(&self, name: &str) -> Env {
        let mut e = Env::new();
        e.docker_config = self.docker_config.clone();
        e.root = e.work.join(name);
        e
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(args)
            .env("STRATA_ROOT", &self.root)
            .env("DOCKER_CONFIG", &self.docker_config)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn strata")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed: {}\nstdout: {}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs, asserts failure, returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "strata {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn ok_stderr(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0].clone()
    }

    fn blobs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// Runs `cmd` with `input` on its stdin; returns its output.
fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// A store holding the busybox fixture as `REG/<unique repo>:1`, pushed to
/// the plain test registry: (store, registry, repository, reference).
fn pushed_busybox(test: &str, prefix: &str) -> Option<(Env, String, String, String)> {
    let reg = strata_testutil::registry(test)?;
    let a = Env::new();
    let repo = unique(prefix);
    let name = format!("{reg}/{repo}:1");
    busybox_image(&a, test, &name)?;
    a.ok(&["push", "-q", &name]);
    Some((a, reg, repo, name))
}

/// A repository name no earlier run used (the registries outlive test runs).
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is installed by .ci/install-deps")
}

fn skopeo_ok(args: &[&str]) -> String {
    let o = skopeo(args);
    assert!(
        o.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An image in `env`'s store named `name`, from the busybox fixture.
fn busybox_image(env: &Env, test: &str, name: &str) -> Option<()> {
    let tar = strata_testutil::busybox_tar(test)?;
    env.ok(&["import", tar.to_str().unwrap(), name]);
    Some(())
}

#[test]
fn push_then_pull_back_gives_the_same_digest_and_skopeo_agrees() {
    let t = "push_then_pull_back_gives_the_same_digest_and_skopeo_agrees";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let a = Env::new();
    let repo = unique("roundtrip");
    let name = format!("{reg}/{repo}:v1");
    if busybox_image(&a, t, &name).is_none() {
        return;
    }
    let local = a.inspect(&name);
    let pushed = a.ok(&["push", "-q", &name]).trim().to_owned();
    assert!(
        pushed.starts_with("sha256:"),
        "push -q prints the digest: {pushed}"
    );
    // skopeo reads back exactly the manifest we pushed.
    let raw = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), pushed);
    let info: Value = serde_json::from_str(&skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .unwrap();
    assert_eq!(info["Digest"], pushed.as_str());
    assert_eq!(info["Architecture"], "amd64");
    // A second push uploads nothing.
    let again = a.ok_stderr(&["push", &name]);
    assert!(!again.contains("Pushed"), "{again}");
    assert!(again.contains("Layer already exists"), "{again}");
    // The same layers in another repository of the same registry are mounted.
    let other = format!("{reg}/{}:v1", unique("mounted"));
    a.ok(&["tag", &name, &other]);
    let mounted = a.ok_stderr(&["push", &other]);
    assert!(
        mounted.contains(&format!("Mounted from {repo}")),
        "{mounted}"
    );
    // As `docker push`: a line per layer, none for the config (issue #13).
    let id = local["Id"].as_str().expect("Id is a string");
    let config_short = &id["sha256:".len()..][..12];
    for out in [&again, &mounted] {
        assert!(!out.contains(config_short), "the config is listed: {out}");
    }
    // A fresh store pulls it back: same manifest digest, same image ID.
    let b = a.other_store("b");
    let out = b.ok(&["pull", &other]);
    assert_eq!(out.trim(), other);
    let pulled = b.inspect(&other);
    assert_eq!(pulled["Id"], local["Id"]);
    let digests = b.ok(&["images", "--digests"]);
    assert!(digests.contains(&pushed), "{digests}");
    // The pulled image runs.
    let ran = b.run(&["run", "--rm", &other, "echo", "pulled-ok"]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "pulled-ok");
}

#[test]
fn chunked_uploads_give_the_same_image() {
    let t = "chunked_uploads_give_the_same_image";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let a = Env::new();
    let name = format!("{reg}/{}:c", unique("chunked"));
    if busybox_image(&a, t, &name).is_none() {
        return;
    }
    // 100 KiB chunks: the ~1 MB layer goes up in a dozen PATCHes.
    let o = a
        .cmd(&["push", "-q", &name])
        .env("STRATA_REGISTRY_CHUNK_SIZE", "102400")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let digest = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let raw = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), digest);
    let dir = a.work.join("copy");
    skopeo_ok(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{name}"),
        &format!("dir:{}", dir.display()),
    ]);
    let b = a.other_store("b");
    b.ok(&["pull", &name]);
    assert_eq!(b.inspect(&name)["Id"], a.inspect(&name)["Id"]);
}

#[test]
fn tls_registry_with_basic_auth_needs_its_ca_and_a_login() {
    let t = "tls_registry_with_basic_auth_needs_its_ca_and_a_login";
    let Some(reg) = strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_TLS") else {
        return;
    };
    let (Some(ca), Some(user), Some(pass)) = (
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_CA"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_USER"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_PASSWORD"),
    ) else {
        return;
    };
    let a = Env::new();
    let name = format!("{reg}/{}:1", unique("secure"));
    if busybox_image(&a, t, &name).is_none() {
        return;
    }
    // Without the CA the self-signed certificate is refused, and plain HTTP
    // is not tried behind the user's back.
    let err = a.fails(&["push", &name]);
    assert!(
        err.contains("TLS with") && err.contains("--registry-ca"),
        "{err}"
    );
    // With the CA but no login: a clear 401 that says what to do.
    let err = a.fails(&["push", "--registry-ca", &ca, &name]);
    assert!(err.contains("authentication required"), "{err}");
    assert!(err.contains(&format!("strata login {reg}")), "{err}");
    // A wrong password is refused and nothing is saved.
    let login = |password: &str| {
        with_stdin(
            a.cmd(&[
                "login",
                &reg,
                "-u",
                &user,
                "--password-stdin",
                "--registry-ca",
                &ca,
            ]),
            format!("{password}\n").as_bytes(),
        )
    };
    let o = login("wrong");
    assert!(!o.status.success());
    assert!(
        !a.docker_config.join("config.json").exists() || {
            let cfg = std::fs::read_to_string(a.docker_config.join("config.json")).unwrap();
            !cfg.contains(&reg)
        }
    );
    // The right one is saved as docker login saves it.
    let o = login(&pass);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: Value = serde_json::from_str(
        &std::fs::read_to_string(a.docker_config.join("config.json")).unwrap(),
    )
    .unwrap();
    assert!(cfg["auths"][&reg]["auth"].is_string(), "{cfg}");
    let digest = a
        .ok(&["push", "-q", "--registry-ca", &ca, &name])
        .trim()
        .to_owned();
    // skopeo, given the same CA and credentials, sees what we pushed.
    let certs = a.work.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let raw = skopeo_ok(&[
        "inspect",
        "--raw",
        "--cert-dir",
        certs.to_str().unwrap(),
        "--creds",
        &format!("{user}:{pass}"),
        &format!("docker://{name}"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), digest);
    // Another store with the same docker config pulls it back.
    let b = a.other_store("b");
    b.ok(&["pull", "--registry-ca", &ca, &name]);
    assert_eq!(b.inspect(&name)["Id"], a.inspect(&name)["Id"]);
    // After logout the registry asks again.
    a.ok_stderr(&["logout", &reg]);
    let c = a.other_store("c");
    let err = c.fails(&["pull", "--registry-ca", &ca, &name]);
    assert!(err.contains("authentication required"), "{err}");
}

/// Writes an OCI layout holding a two-platform index (linux/amd64 and
/// linux/arm64 images that share a layer and differ in config) under
/// `dir`, tagged `multi`.
fn write_multi_arch_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let d = sha256(data);
        std::fs::write(blobs.join(&d[7..]), data).unwrap();
        (d, data.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    let content = vec![b'x'; 200 * 1024];
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    // Complete numeric fields, so builds can unpack it too.
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, "payload", &content[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let (layer, layer_size) = put(&gz.finish().unwrap());
    let mut manifests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let config = json!({
            "architecture": arch, "os": "linux",
            "config": {"Labels": {"built.for": arch}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        });
        let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size}],
        });
        let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
        let mut platform = json!({"architecture": arch, "os": "linux"});
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": ms, "platform": platform,
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (id, is) = put(&serde_json::to_vec(&index).unwrap());
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": id, "size": is,
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
}

#[test]
fn multi_arch_index_resolves_to_the_asked_platform() {
    let t = "multi_arch_index_resolves_to_the_asked_platform";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let a = Env::new();
    let layout = a.work.join("layout");
    write_multi_arch_layout(&layout);
    let name = format!("{reg}/{}:multi", unique("multiarch"));
    skopeo_ok(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{name}"),
    ]);
    let raw = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{name}"),
    ]);
    let index_digest = sha256(raw.as_bytes());
    // The host platform by default, and the index digest is what pull reports.
    let err = a.ok_stderr(&["pull", &name]);
    assert!(err.contains(&format!("Digest: {index_digest}")), "{err}");
    let img = a.inspect(&name);
    assert_eq!(img["Architecture"], "amd64");
    assert_eq!(img["Config"]["Labels"]["built.for"], "amd64");
    // Another platform on request.
    let b = a.other_store("b");
    b.ok(&["pull", "--platform", "linux/arm64", &name]);
    let img = b.inspect(&name);
    assert_eq!(img["Architecture"], "arm64");
    assert_eq!(img["Config"]["Labels"]["built.for"], "arm64");
    // A platform the index lacks: the error lists what it has.
    let c = a.other_store("c");
    let err = c.fails(&["pull", "--platform", "linux/s390x", &name]);
    assert!(
        err.contains("linux/s390x")
            && err.contains("linux/amd64")
            && err.contains("linux/arm64/v8"),
        "{err}"
    );
    // Pinned by the index digest.
    let d = a.other_store("d");
    let pinned = format!("{}@{index_digest}", name.rsplit_once(':').unwrap().0);
    d.ok(&["pull", &pinned]);
    assert_eq!(d.inspect(&pinned)["Architecture"], "amd64");
}

#[test]
fn a_download_cut_mid_layer_resumes_with_a_range_request() {
    let Some((a, reg, repo, name)) = pushed_busybox(
        "a_download_cut_mid_layer_resumes_with_a_range_request",
        "resume",
    ) else {
        return;
    };
    let proxy = fault_proxy::start(&reg, fault_proxy::Fault::TruncateOnce);
    let via = format!("{}/{repo}:1", proxy.addr);
    let b = a.other_store("b");
    b.ok(&["pull", &via]);
    let log = proxy.requests();
    let ranged: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("/blobs/") && l.contains("range=bytes="))
        .collect();
    assert_eq!(ranged.len(), 1, "one resumed request expected: {log:#?}");
    assert!(
        !ranged[0].contains("range=bytes=0-"),
        "resumed from the middle: {log:#?}"
    );
    assert_eq!(b.inspect(&via)["Id"], a.inspect(&name)["Id"]);
    // Nothing is left half-downloaded.
    let left: Vec<_> = std::fs::read_dir(b.root.join("downloads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_stored() {
    let Some((a, reg, repo, name)) =
        pushed_busybox("a_corrupt_blob_is_refused_and_nothing_is_stored", "corrupt")
    else {
        return;
    };
    let layer = a.inspect(&name)["RootFS"]["Layers"][0].clone();
    let proxy = fault_proxy::start(&reg, fault_proxy::Fault::Corrupt);
    let via = format!("{}/{repo}:1", proxy.addr);
    let b = a.other_store("b");
    let err = b.fails(&["pull", &via]);
    assert!(
        err.contains("does not match its digest") && err.contains("refused"),
        "{err}"
    );
    assert!(err.contains(&repo), "the error names the repository: {err}");
    assert!(
        b.ok(&["images", "-q"]).trim().is_empty(),
        "no image recorded"
    );
    // No layer blob, verified or not, stays behind.
    let blobs = b.blobs();
    assert!(
        !blobs
            .iter()
            .any(|d| layer.as_str().is_some_and(|l| l.ends_with(d.as_str()))),
        "{blobs:?}"
    );
    let partials = std::fs::read_dir(b.root.join("downloads")).unwrap().count();
    assert_eq!(partials, 0);
    // The same pull without the fault works, into the same store.
    b.ok(&["pull", &name]);
}

#[test]
fn retries_503_and_speaks_bearer_token_auth() {
    let Some((a, reg, repo, name)) =
        pushed_busybox("retries_503_and_speaks_bearer_token_auth", "bearer")
    else {
        return;
    };
    // 503 on the first manifest request: retried, not fatal.
    let flaky = fault_proxy::start(&reg, fault_proxy::Fault::Unavailable);
    let b = a.other_store("b");
    b.ok(&["pull", &format!("{}/{repo}:1", flaky.addr)]);
    let log = flaky.requests();
    assert!(
        log.iter().filter(|l| l.contains("/manifests/1")).count() >= 2,
        "{log:#?}"
    );
    // A Bearer realm: anonymous is refused clearly; with credentials in
    // the docker config, the token flow is followed.
    let proxy = fault_proxy::start(
        &reg,
        fault_proxy::Fault::Bearer {
            user: "tok-user",
            password: "tok-pass",
        },
    );
    let via = format!("{}/{repo}:1", proxy.addr);
    let c = a.other_store("c");
    let err = c.fails(&["pull", &via]);
    assert!(err.contains("authentication required"), "{err}");
    std::fs::create_dir_all(&c.docker_config).unwrap();
    let auth = fault_proxy::base64_encode(b"tok-user:tok-pass");
    std::fs::write(
        c.docker_config.join("config.json"),
        json!({"auths": {proxy.addr.clone(): {"auth": auth}}}).to_string(),
    )
    .unwrap();
    c.ok(&["pull", &via]);
    assert_eq!(c.inspect(&via)["Id"], a.inspect(&name)["Id"]);
    let log = proxy.requests();
    assert!(log.iter().any(|l| l.starts_with("GET /token?")), "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("scope=repository")),
        "{log:#?}"
    );
}

#[test]
fn docker_hub_images_come_from_a_mirror() {
    let t = "docker_hub_images_come_from_a_mirror";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let a = Env::new();
    // The mirror holds library/<name>, as a pull-through cache of Hub would.
    let short = unique("mirrored");
    let on_mirror = format!("{reg}/library/{short}:1");
    if busybox_image(&a, t, &on_mirror).is_none() {
        return;
    }
    a.ok(&["push", "-q", &on_mirror]);
    let b = a.other_store("b");
    b.ok(&[
        "pull",
        "--registry-mirror",
        &format!("http://{reg}"),
        &format!("{short}:1"),
    ]);
    // Recorded under its Docker Hub name.
    assert_eq!(
        b.inspect(&format!("docker.io/library/{short}:1"))["Id"],
        a.inspect(&on_mirror)["Id"]
    );
}

#[test]
fn build_pulls_its_base_and_pushes_the_result() {
    let t = "build_pulls_its_base_and_pushes_the_result";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !strata_testutil::require_root(t) {
        return;
    }
    let a = Env::new();
    let base = format!("{reg}/{}:1", unique("base"));
    if busybox_image(&a, t, &base).is_none() {
        return;
    }
    a.ok(&["push", "-q", &base]);
    // A store that has never seen the base: FROM pulls it.
    let b = a.other_store("b");
    let ctx = b.work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nRUN echo built > /built.txt\nCMD [\"cat\", \"/built.txt\"]\n"),
    )
    .unwrap();
    let target = format!("{reg}/{}:1", unique("built"));
    let meta = b.work.join("meta.json");
    let o = b.run(&[
        "build",
        "-t",
        &target,
        "--push",
        "--metadata-file",
        meta.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("[internal] pull"), "{err}");
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(&meta).unwrap()).unwrap();
    let digest = meta["containerimage.digest"].as_str().unwrap().to_owned();
    let raw = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{target}"),
    ]);
    assert_eq!(sha256(raw.as_bytes()), digest);
    // Pulled back elsewhere, it is the same image and runs.
    let c = a.other_store("c");
    c.ok(&["pull", &target]);
    assert_eq!(c.inspect(&target)["Id"], b.inspect(&target)["Id"]);
    let ran = c.run(&["run", "--rm", &target]);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "built");
    // -o type=registry does the same.
    let target2 = format!("{reg}/{}:2", unique("built"));
    b.ok(&[
        "build",
        "-q",
        "-o",
        &format!("type=registry,name={target2}"),
        ctx.to_str().unwrap(),
    ]);
    skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{target2}"),
    ]);
}

#[test]
fn a_missing_image_is_a_clear_not_found() {
    let t = "a_missing_image_is_a_clear_not_found";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let a = Env::new();
    let err = a.fails(&["pull", &format!("{reg}/{}:nope", unique("absent"))]);
    assert!(err.contains("not found"), "{err}");
    assert!(err.contains("check the repository name and tag"), "{err}");
    let err = a.fails(&["pull", "Not/A/Valid:ref:"]);
    assert!(err.contains("invalid reference format"), "{err}");
}

/// Reads the summary line `... steps cached: N, steps run: M` of a build.
fn steps_run(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("steps run:"))
        .unwrap_or_else(|| panic!("no summary in: {stderr}"));
    line.rsplit("steps run: ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("bad summary: {line}"))
}

#[test]
fn a_shared_cache_lets_an_empty_store_build_without_running_anything() {
    let t = "a_shared_cache_lets_an_empty_store_build_without_running_anything";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !strata_testutil::require_root(t) {
        return;
    }
    let a = Env::new();
    let base = format!("{reg}/{}:1", unique("cachebase"));
    if busybox_image(&a, t, &base).is_none() {
        return;
    }
    a.ok(&["push", "-q", &base]);
    let ctx = a.work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base} AS builder\nRUN echo compiled > /out.txt\n\
             FROM {base}\nCOPY --from=builder /out.txt /out.txt\n\
             RUN cat /out.txt > /final.txt\nCOPY hello.txt /hello.txt\n"
        ),
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "one\n").unwrap();
    let cache = format!("{reg}/{}:max", unique("buildcache"));
    let local = a.work.join("local-cache");
    let ctx_s = ctx.to_str().unwrap();
    let built = a.ok_stderr(&[
        "build",
        "-t",
        "app:1",
        "--cache-to",
        &format!("type=registry,ref={cache},mode=max"),
        "--cache-to",
        &format!("type=local,dest={}", local.display()),
        ctx_s,
    ]);
    assert_eq!(steps_run(&built), 2, "{built}");
    let id_a = a.inspect("app:1")["Id"].clone();
    // The cache is an ordinary OCI artifact that skopeo can read.
    let raw = skopeo_ok(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{cache}"),
    ]);
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.strata.cache.v1");

    // Store B is empty: with mode=max every step comes from the cache.
    let b = a.other_store("b");
    let out = b.ok_stderr(&[
        "build",
        "-t",
        "app:1",
        "--cache-from",
        &format!("type=registry,ref={cache}"),
        ctx_s,
    ]);
    assert_eq!(steps_run(&out), 0, "{out}");
    assert_eq!(b.inspect("app:1")["Id"], id_a);

    // Store C with the local cache, written mode=min: the builder stage is not
    // in it, so its RUN runs; everything else is reused and the image is equal.
    let c = a.other_store("c");
    let out = c.ok_stderr(&[
        "build",
        "-t",
        "app:1",
        "--cache-from",
        &format!("type=local,src={}", local.display()),
        ctx_s,
    ]);
    assert_eq!(steps_run(&out), 1, "{out}");
    assert_eq!(c.inspect("app:1")["Id"], id_a);

    // Store D with a changed hello.txt: the matching steps come from the
    // cache, only the last COPY is redone, and the layer of the old COPY is
    // never downloaded.
    std::fs::write(ctx.join("hello.txt"), "two\n").unwrap();
    let d = a.other_store("d");
    let out = d.ok_stderr(&["build", "-t", "app:2", "--cache-from", &cache, ctx_s]);
    assert_eq!(steps_run(&out), 0, "COPY is not a RUN step: {out}");
    assert!(out.contains("steps cached: 3"), "{out}");
    let a_layers = layer_blobs(&a, "app:1");
    let d_layers = layer_blobs(&d, "app:2");
    assert_eq!(
        a_layers[..a_layers.len() - 1],
        d_layers[..d_layers.len() - 1]
    );
    let old_copy = a_layers.last().unwrap();
    assert!(!d_layers.contains(old_copy));
    // The old COPY layer's blob was never fetched into D.
    assert!(
        !d.blobs().contains(&old_copy[7..].to_owned()),
        "D fetched {old_copy}, which no step of its build needs"
    );
}

/// A container without a CA bundle (rustls-native-certs reads only
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` when they are set: here they name
/// nothing): strata still makes TLS connections, with its built-in Mozilla
/// roots. Against the TLS test registry, whose certificate is signed by the
/// test's own CA, that is a verification failure naming the unknown
/// issuer and the roots used, never "No CA certificates were loaded";
/// with the registry's CA given, the same pull gets as far as the login.
#[test]
fn without_a_system_ca_bundle_the_built_in_roots_verify() {
    let t = "without_a_system_ca_bundle_the_built_in_roots_verify";
    let Some(reg) = strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_TLS") else {
        return;
    };
    let Some(ca) = strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_CA") else {
        return;
    };
    let a = Env::new();
    let empty = a.work.join("no-certs");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let no_bundle = |args: &[&str]| {
        a.cmd(args)
            .env("SSL_CERT_FILE", empty.join("ca-certificates.crt"))
            .env("SSL_CERT_DIR", &empty)
            .output()
            .expect("spawn strata")
    };
    let name = format!("{reg}/{}:1", unique("no-bundle"));
    let o = no_bundle(&["pull", &name]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("No CA certificates"), "{err}");
    assert!(
        err.contains(&format!("TLS with {reg} failed"))
            && err.contains("UnknownIssuer")
            && err.contains(
                "(trusted roots: strata's built-in Mozilla roots, as the system has no CA bundle)"
            ),
        "{err}"
    );
    // The system's bundle, where there is one, is what is named instead.
    let system_bundle = std::env::var_os("SSL_CERT_FILE").is_none()
        && std::env::var_os("SSL_CERT_DIR").is_none()
        && Path::new("/etc/ssl/certs/ca-certificates.crt").is_file();
    if system_bundle {
        let err = a.fails(&["pull", &name]);
        assert!(
            err.contains("(trusted roots: the system's CA bundle)"),
            "{err}"
        );
    }
    // With the registry's CA (added to the built-in roots), TLS works: the
    // registry asks for a login.
    let o = no_bundle(&["pull", "--registry-ca", &ca, &name]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("authentication required"), "{err}");
    // A plain-HTTP registry named `localhost` needs no certificates at all
    // (as 127.0.0.1 does: tests/dist.rs).
    let Some(plain) = strata_testutil::registry(t) else {
        return;
    };
    let port = plain.rsplit_once(':').map_or("", |(_, p)| p);
    let local = format!("localhost:{port}/{}:1", unique("no-bundle"));
    if busybox_image(&a, t, &local).is_none() {
        return;
    }
    let o = no_bundle(&["push", &local]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// docs/ci.md's CI snippets ("GitLab CI on Kubernetes", "GitHub Actions",
/// container job and plain runner): every job runs, in a fresh store (an
/// ephemeral runner), in its checkout,
/// `strata build --progress plain --push -t REGISTRY/app:TAG
///   --cache-from type=registry,ref=REGISTRY/app:cache
///   --cache-to type=registry,ref=REGISTRY/app:cache,mode=max .`
/// The first job finds no cache yet and must still build; the next, on
/// another runner for another commit of the same content, takes every step
/// from the cache the first wrote to the same ref, and pushes the same
/// image.
#[test]
fn ci_md_snippet_cache_from_and_to_one_ref_shares_steps_between_runners() {
    let t = "ci_md_snippet_cache_from_and_to_one_ref_shares_steps_between_runners";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !strata_testutil::require_root(t) {
        return;
    }
    let setup = Env::new();
    let base = format!("{reg}/{}:1", unique("ci-base"));
    if busybox_image(&setup, t, &base).is_none() {
        return;
    }
    setup.ok(&["push", "-q", &base]);
    let checkout = setup.work.join("checkout");
    std::fs::create_dir_all(&checkout).expect("mkdir checkout");
    std::fs::write(
        checkout.join("Dockerfile"),
        format!(
            "FROM {base} AS build\nRUN echo compiled > /out && rm -rf /root\n\
             FROM {base}\nCOPY --from=build /out /app/out\nCOPY src.txt /app/\n\
             RUN cat /app/out /app/src.txt > /app/all\n"
        ),
    )
    .expect("write Dockerfile");
    std::fs::write(checkout.join("src.txt"), "source\n").expect("write src.txt");
    let app = format!("{reg}/{}", unique("ci-app"));
    let job = |runner: &Env, tag: &str| {
        let image = format!("{app}:{tag}");
        let o = runner
            .cmd(&[
                "build",
                "--progress",
                "plain",
                "--push",
                "-t",
                &image,
                "--cache-from",
                &format!("type=registry,ref={app}:cache"),
                "--cache-to",
                &format!("type=registry,ref={app}:cache,mode=max"),
                ".",
            ])
            .current_dir(&checkout)
            .output()
            .expect("spawn strata");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "the CI job for {tag} failed:\n{err}");
        (runner.inspect(&image)["Id"].clone(), err)
    };
    let first = setup.other_store("runner-1");
    let (id_first, err) = job(&first, "c0ffee1");
    assert_eq!(steps_run(&err), 2, "{err}");
    let second = setup.other_store("runner-2");
    let (id_second, err) = job(&second, "c0ffee2");
    assert_eq!(steps_run(&err), 0, "the second runner ran steps:\n{err}");
    assert_eq!(id_second, id_first);
    // What the second job pushed is the first job's image.
    let pulled = setup.other_store("puller");
    pulled.ok(&["pull", &format!("{app}:c0ffee2")]);
    assert_eq!(pulled.inspect(&format!("{app}:c0ffee2"))["Id"], id_first);
}

/// The compressed layer digests of an image, from its manifest as shipped:
/// the one `inspect`'s RepoDigests names (layers a build stored
/// uncompressed are compressed for it, and the manifest stored).
fn layer_blobs(env: &Env, name: &str) -> Vec<String> {
    let img = env.inspect(name);
    let pinned = img["RepoDigests"][0].as_str().unwrap();
    let (_, digest) = pinned.split_once("@sha256:").unwrap();
    let data = std::fs::read(env.root.join("blobs/sha256").join(digest)).unwrap();
    let v: Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(v["config"]["digest"], img["Id"], "{name}: {pinned}");
    v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_pull_killed_mid_layer_is_resumed_by_the_next_pull() {
    let Some((a, reg, repo, name)) = pushed_busybox(
        "a_pull_killed_mid_layer_is_resumed_by_the_next_pull",
        "resume-later",
    ) else {
        return;
    };
    // Every attempt is cut short: the pull gives up, keeping what it has.
    let cutting = fault_proxy::start(&reg, fault_proxy::Fault::TruncateAlways);
    let b = a.other_store("b");
    let err = b.fails(&["pull", &format!("{}/{repo}:1", cutting.addr)]);
    assert!(err.contains("run the command again to resume"), "{err}");
    let partials: Vec<u64> = std::fs::read_dir(b.root.join("downloads"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok().map(|m| m.len()))
        .collect();
    assert!(
        partials.len() == 1 && partials[0] > 0,
        "a partial download is kept: {partials:?}"
    );
    assert!(b.ok(&["images", "-q"]).trim().is_empty());
    // The next pull starts where the last one stopped.
    let clean = fault_proxy::start(&reg, fault_proxy::Fault::Log);
    let via = format!("{}/{repo}:1", clean.addr);
    b.ok(&["pull", &via]);
    let log = clean.requests();
    let blob_gets: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("GET") && l.contains("/blobs/"))
        .collect();
    let expected = format!("range=bytes={}-", partials[0]);
    assert!(
        blob_gets.iter().any(|l| l.ends_with(&expected)),
        "resumed at byte {}: {log:#?}",
        partials[0]
    );
    assert_eq!(b.inspect(&via)["Id"], a.inspect(&name)["Id"]);
}

/// A gpg key and a password store in `dir`, for docker-credential-pass.
fn password_store(dir: &Path) -> Option<Vec<(String, String)>> {
    let gnupg = dir.join("gnupg");
    std::fs::create_dir_all(&gnupg).unwrap();
    std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let envs = vec![
        ("GNUPGHOME".to_owned(), gnupg.display().to_string()),
        (
            "PASSWORD_STORE_DIR".to_owned(),
            dir.join("pass").display().to_string(),
        ),
    ];
    let run = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let ok = run(
        "gpg",
        &[
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            "strata-test <test@strata.invalid>",
            "default",
            "default",
            "never",
        ],
    ) && run("pass", &["init", "strata-test <test@strata.invalid>"]);
    ok.then_some(envs)
}

#[test]
fn login_goes_through_a_credential_helper_when_one_is_configured() {
    let t = "login_goes_through_a_credential_helper_when_one_is_configured";
    let Some(reg) = strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_TLS") else {
        return;
    };
    let (Some(ca), Some(user), Some(pass)) = (
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_CA"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_USER"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_PASSWORD"),
    ) else {
        return;
    };
    if Command::new("docker-credential-pass")
        .arg("version")
        .output()
        .is_err()
    {
        strata_testutil::skip(
            t,
            "docker-credential-pass is not installed (.ci/install-deps)",
        );
        return;
    }
    let a = Env::new();
    let Some(envs) = password_store(&a.work.join("secrets")) else {
        strata_testutil::skip(t, "could not make a gpg key and a pass store");
        return;
    };
    // gpg starts an agent for this GNUPGHOME; stop it however the test ends.
    struct StopAgent(Vec<(String, String)>);
    impl Drop for StopAgent {
        fn drop(&mut self) {
            let _ = Command::new("gpgconf")
                .args(["--kill", "gpg-agent"])
                .envs(self.0.iter().map(|(k, v)| (k, v)))
                .output();
        }
    }
    let _agent = StopAgent(envs.clone());
    std::fs::create_dir_all(&a.docker_config).unwrap();
    std::fs::write(
        a.docker_config.join("config.json"),
        r#"{"credsStore": "pass"}"#,
    )
    .unwrap();
    let name = format!("{reg}/{}:1", unique("helper"));
    if busybox_image(&a, t, &name).is_none() {
        return;
    }
    let with_env = |args: &[&str]| {
        let mut c = a.cmd(args);
        c.envs(envs.iter().map(|(k, v)| (k, v)));
        c
    };
    let o = with_stdin(
        with_env(&[
            "login",
            &reg,
            "-u",
            &user,
            "--password-stdin",
            "--registry-ca",
            &ca,
        ]),
        pass.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The secret went to the helper, not into config.json.
    let cfg = std::fs::read_to_string(a.docker_config.join("config.json")).unwrap();
    assert!(!cfg.contains("\"auth\""), "{cfg}");
    let mut get = Command::new("docker-credential-pass");
    get.arg("get")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = get.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reg.as_bytes())
        .unwrap();
    let got: Value = serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(got["Username"], user.as_str());
    // Pushing reads the credentials back through the helper.
    let o = with_env(&["push", "-q", "--registry-ca", &ca, &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Logout erases them from the helper.
    let o = with_env(&["logout", &reg]).output().unwrap();
    assert!(o.status.success());
    let o = with_env(&["push", "--registry-ca", &ca, &name])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("authentication required"));
    // credHelpers names a helper for this registry alone; it wins over the
    // (here absent) credsStore.
    std::fs::write(
        a.docker_config.join("config.json"),
        json!({"credHelpers": {reg.clone(): "pass"}}).to_string(),
    )
    .unwrap();
    let o = with_stdin(
        with_env(&[
            "login",
            &reg,
            "-u",
            &user,
            "--password-stdin",
            "--registry-ca",
            &ca,
        ]),
        pass.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with_env(&["push", "-q", "--registry-ca", &ca, &name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_ca_in_docker_certs_d_is_trusted_without_flags() {
    let t = "a_ca_in_docker_certs_d_is_trusted_without_flags";
    let (Some(reg), Some(ca), Some(user), Some(pass)) = (
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_TLS"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_CA"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_USER"),
        strata_testutil::env_or_skip(t, "STRATA_TEST_REGISTRY_PASSWORD"),
    ) else {
        return;
    };
    let a = Env::new();
    let name = format!("{reg}/{}:1", unique("certsd"));
    if busybox_image(&a, t, &name).is_none() {
        return;
    }
    // ~/.docker/certs.d/HOST:PORT/ca.crt, as Docker reads it.
    let home = a.work.join("home");
    let certs = home.join(".docker/certs.d").join(&reg);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let with_home = |args: &[&str]| {
        let mut c = a.cmd(args);
        c.env("HOME", &home);
        c
    };
    let o = with_stdin(
        with_home(&["login", &reg, "-u", &user, "--password-stdin"]),
        pass.as_bytes(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = with_home(&["push", "-q", &name]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn multi_platform_build_pulls_each_platforms_base_unnamed() {
    let t = "multi_platform_build_pulls_each_platforms_base_unnamed";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !strata_testutil::require_root(t) {
        return;
    }
    let a = Env::new();
    let layout = a.work.join("layout");
    write_multi_arch_layout(&layout);
    let base = format!("{reg}/{}:multi", unique("multibase"));
    skopeo_ok(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &format!("oci:{}:multi", layout.display()),
        &format!("docker://{base}"),
    ]);
    let (host, foreign) = match std::env::consts::ARCH {
        "aarch64" => ("arm64", "amd64"),
        _ => ("amd64", "arm64"),
    };
    let ctx = a.work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nARG TARGETARCH\nCOPY $TARGETARCH.txt /arch.txt\n"),
    )
    .unwrap();
    for arch in ["amd64", "arm64"] {
        std::fs::write(ctx.join(format!("{arch}.txt")), arch).unwrap();
    }
    let archive = a.work.join("multi.tar");
    let err = a.ok_stderr(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(
        err.contains(&format!("[internal] pull {base} for linux/{foreign}")),
        "{err}"
    );
    // Each platform's image is built on that platform's base.
    let copied = a.work.join("copied");
    skopeo_ok(&[
        "copy",
        "--all",
        &format!("oci-archive:{}", archive.display()),
        &format!("oci:{}:x", copied.display()),
    ]);
    let read = |d: &Value| -> Value {
        let hex = d.as_str().unwrap().trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(copied.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let top: Value =
        serde_json::from_slice(&std::fs::read(copied.join("index.json")).unwrap()).unwrap();
    let index = read(&top["manifests"][0]["digest"]);
    // The images, then buildx's default provenance (an attestation
    // manifest per platform, `unknown/unknown`).
    let entries: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["platform"]["os"] != "unknown")
        .collect();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 4, "{index}");
    for (m, arch) in entries.iter().zip(["amd64", "arm64"]) {
        assert_eq!(m["platform"]["architecture"], arch, "{index}");
        let config = read(&read(&m["digest"])["config"]["digest"]);
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["config"]["Labels"]["built.for"], arch, "{config}");
    }
    // The base's name in the store still means the host's image.
    assert_eq!(a.inspect(&base)["Architecture"], host);
}
