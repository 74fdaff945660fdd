//! SBOM attestations (`--sbom`, `--attest type=sbom`), read back by their
//! real consumer: strata pushes to the plain test registry and `docker
//! buildx imagetools inspect --format '{{ json .SBOM }}'` reads the SPDX
//! documents. The packages are checked against what the image's own
//! package tools say (`dpkg-query -W`, Python's `importlib.metadata`)
//! and, for the formats no tool here reads, against the real files the
//! image was built from.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A store and an empty context; `None` (skipped) without root, which
    /// RUN steps need.
    fn new(test: &str) -> Option<Env> {
        if !strata_testutil::require_root(test) {
            return None;
        }
        let env = Env {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        std::fs::create_dir_all(env.ctx()).expect("mkdir");
        std::fs::create_dir_all(env.dir.path().join("docker")).expect("mkdir");
        std::fs::write(env.dir.path().join("docker/config.json"), "{}").expect("write");
        Some(env)
    }

    /// Imports the debootstrapped Debian fixture as
    /// `strata-test/debian:bookworm`.
    fn with_debian(self, test: &str) -> Option<Env> {
        let tar = strata_testutil::debian_tar(test)?;
        self.ok(&[
            "import",
            tar.to_str().expect("utf-8 path"),
            "strata-test/debian:bookworm",
        ]);
        Some(self)
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(args)
            .current_dir(self.ctx())
            .env("STRATA_ROOT", self.dir.path().join("store"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env("SOURCE_DATE_EPOCH", "1700000000")
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

    /// Builds the context into `-o type=local` at `out` (under the temp
    /// dir) with `extra` flags.
    fn build_local(&self, out: &str, extra: &[&str]) -> PathBuf {
        let dest = self.dir.path().join(out);
        let o = format!("type=local,dest={}", dest.display());
        let mut args = vec!["build", "--progress", "plain", "-o", &o];
        args.extend_from_slice(extra);
        args.push(".");
        self.ok(&args);
        dest
    }

    fn imagetools_sbom(&self, name: &str) -> Value {
        let o = Command::new("docker")
            .args(["buildx", "imagetools", "inspect", name])
            .args(["--format", "{{ json .SBOM }}"])
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .output()
            .expect("spawn docker");
        assert!(
            o.status.success(),
            "imagetools inspect {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("imagetools prints JSON")
    }
}

fn imagetools_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["buildx", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        strata_testutil::skip(test, "docker buildx (imagetools) is not installed");
    }
    ok
}

/// A repository name no earlier run used (the registry outlives test runs).
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("sbom-{name}-{}-{nanos}", std::process::id())
}

/// The SPDX document in an in-toto statement file of a local output.
fn statement_predicate(path: &Path) -> Value {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st: Value = serde_json::from_slice(&raw).expect("statement JSON");
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(st["predicateType"], "https://spdx.dev/Document");
    st["predicate"].clone()
}

/// (name, version) of every package whose purl is of `kind`.
fn packages_of(doc: &Value, kind: &str) -> Vec<(String, String)> {
    let prefix = format!("pkg:{kind}/");
    let mut out: Vec<(String, String)> = doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| {
            p["externalRefs"].as_array().is_some_and(|refs| {
                refs.iter().any(|r| {
                    r["referenceType"] == "purl"
                        && r["referenceLocator"]
                            .as_str()
                            .is_some_and(|l| l.starts_with(&prefix))
                })
            })
        })
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["versionInfo"].as_str().expect("version").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn purls(doc: &Value) -> Vec<String> {
    doc["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["referenceLocator"].as_str().map(str::to_owned))
        .collect()
}

/// Lines `NAME\tVERSION` as a sorted list.
fn pairs(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once('\t').expect("NAME<TAB>VERSION");
            (n.to_owned(), v.to_owned())
        })
        .collect();
    out.sort();
    out
}

/// On the debootstrapped Debian, the SBOM that `imagetools inspect` reads
/// from the registry lists exactly the packages `dpkg-query -W` prints
/// inside the image, and a `local` output gets the same document as
/// `sbom.spdx.json`.
#[test]
fn debian_sbom_lists_what_dpkg_query_lists() {
    let t = "debian_sbom_lists_what_dpkg_query_lists";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !imagetools_available(t) {
        return;
    }
    let Some(env) = Env::new(t).and_then(|e| e.with_debian(t)) else {
        return;
    };
    env.write(
        "Dockerfile",
        "FROM strata-test/debian:bookworm\nRUN dpkg-query -W -f '${Package}\\t${Version}\\n' > /dpkg-query.txt\n",
    );
    let name = format!("{reg}/{}:1", unique("debian"));
    env.ok(&[
        "build",
        "--progress",
        "plain",
        "--insecure-registry",
        &reg,
        "-t",
        &name,
        "--push",
        "--sbom=true",
        ".",
    ]);
    let sbom = env.imagetools_sbom(&name);
    let doc = &sbom["SPDX"];
    assert_eq!(doc["spdxVersion"], "SPDX-2.3", "{sbom}");
    assert!(
        sbom.get("AdditionalSPDXs").is_none(),
        "no stage was scanned"
    );
    let out = env.build_local("out", &["--sbom=true"]);
    let listed = std::fs::read_to_string(out.join("dpkg-query.txt")).expect("dpkg-query output");
    let expected = pairs(&listed);
    assert!(expected.len() > 50, "{listed}");
    assert_eq!(packages_of(doc, "deb"), expected);
    let debian_version = std::fs::read_to_string(out.join("etc/debian_version")).expect("version");
    let major = debian_version.split('.').next().expect("major").trim();
    assert!(
        purls(doc)
            .iter()
            .any(|p| p.starts_with("pkg:deb/debian/dpkg@")
                && p.contains("?arch=")
                && p.ends_with(&format!("&distro=debian-{major}"))),
        "{:?}",
        purls(doc)
    );
    // The local output's file holds the same document.
    assert_eq!(&statement_predicate(&out.join("sbom.spdx.json")), doc);
}

/// The same image gives the same SBOM bytes on a rebuild, and asking for
/// one changes no image ID.
#[test]
fn sbom_bytes_are_reproducible_and_image_ids_unchanged() {
    let t = "sbom_bytes_are_reproducible_and_image_ids_unchanged";
    let Some(env) = Env::new(t).and_then(|e| e.with_debian(t)) else {
        return;
    };
    env.write(
        "Dockerfile",
        "FROM strata-test/debian:bookworm\nRUN echo built > /built\n",
    );
    let plain = env.ok(&["build", "-q", "."]);
    let a = env.build_local("a", &["--sbom=true", "--iidfile", "../a.iid"]);
    let b = env.build_local("b", &["--sbom=true", "--no-cache", "--iidfile", "../b.iid"]);
    let bytes = |d: &Path| std::fs::read(d.join("sbom.spdx.json")).expect("sbom.spdx.json");
    assert_eq!(bytes(&a), bytes(&b), "two builds gave two SBOMs");
    let iid = |f: &str| std::fs::read_to_string(env.dir.path().join(f)).expect("iidfile");
    assert_eq!(iid("a.iid"), iid("b.iid"));
    assert_eq!(
        plain.trim(),
        iid("a.iid").trim(),
        "--sbom changed the image ID"
    );
    let doc = statement_predicate(&a.join("sbom.spdx.json"));
    assert_eq!(doc["creationInfo"]["created"], "2023-11-14T22:13:20Z");
}

/// An apk database, Python and npm metadata, a Go binary and a Rust binary
/// built with `cargo auditable`, each from real files, are found; a
/// package removed in a later layer (a whiteout) is not.
#[test]
fn sbom_finds_each_ecosystem_and_respects_whiteouts() {
    let t = "sbom_finds_each_ecosystem_and_respects_whiteouts";
    let Some(env) = Env::new(t).and_then(|e| e.with_debian(t)) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Alpine 3.20's own record of musl and busybox-binsh.
    env.write(
        "apk-installed",
        "C:Q1Kf0q5/9y4sBDv5ULcMnwlLSN0nE=\nP:musl\nV:1.2.5-r0\nA:x86_64\nS:411308\nI:641024\nT:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\no:musl\nm:Natanael Copa <ncopa@alpinelinux.org>\nF:lib\nR:ld-musl-x86_64.so.1\n\nC:Q1abc=\nP:busybox-binsh\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\no:busybox\n\n",
    );
    env.write(
        "requests.METADATA",
        "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n\nRequests is an HTTP library.\n",
    );
    env.write(
        "node_modules/@babel/core/package.json",
        r#"{"name":"@babel/core","version":"7.24.0","license":"MIT"}"#,
    );
    env.write(
        "node_modules/left-pad/package.json",
        r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#,
    );
    env.write(
        "node_modules/gone/package.json",
        r#"{"name":"gone","version":"9.9.9"}"#,
    );
    std::fs::copy(
        root.join("testdata/sbom/cargo-auditable.dep-v0"),
        env.ctx().join("dep-v0"),
    )
    .expect("copy the cargo-auditable section");
    let go_binary = Path::new("/usr/bin/docker-credential-pass");
    let has_go = go_binary.exists();
    if has_go {
        std::fs::copy(go_binary, env.ctx().join("docker-credential-pass")).expect("copy");
    } else {
        strata_testutil::skip(
            t,
            "no /usr/bin/docker-credential-pass (golang-docker-credential-helpers): the Go part is left out",
        );
    }
    let mut dockerfile = String::from(
        "FROM strata-test/debian:bookworm\n\
         COPY apk-installed /lib/apk/db/installed\n\
         COPY requests.METADATA /usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA\n\
         COPY node_modules /app/node_modules\n\
         COPY dep-v0 /tmp/dep-v0\n\
         RUN objcopy --add-section .dep-v0=/tmp/dep-v0 /bin/true /usr/local/bin/sbom-sample \
             && chmod 755 /usr/local/bin/sbom-sample && rm /tmp/dep-v0 \
             && rm -r /app/node_modules/gone\n",
    );
    if has_go {
        dockerfile.push_str("COPY docker-credential-pass /usr/local/bin/\n");
    }
    env.write("Dockerfile", dockerfile);
    let out = env.build_local("out", &["--attest", "type=sbom"]);
    let doc = statement_predicate(&out.join("sbom.spdx.json"));
    let purls = purls(&doc);
    for want in [
        "pkg:apk/debian/musl@1.2.5-r0?arch=x86_64&upstream=musl&distro=debian-12",
        "pkg:pypi/requests@2.31.0",
        "pkg:npm/%40babel/core@7.24.0",
        "pkg:npm/left-pad@1.3.0",
        "pkg:cargo/hex@0.4.3",
        "pkg:cargo/sbom-sample@0.3.1",
    ] {
        assert!(purls.iter().any(|p| p == want), "{want} not in {purls:?}");
    }
    assert!(
        !purls.iter().any(|p| p.contains("gone")),
        "a removed package is listed"
    );
    let by_name = |n: &str| {
        doc["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("no package {n}"))
    };
    assert_eq!(by_name("left-pad")["licenseDeclared"], "WTFPL");
    assert!(
        by_name("sbom-sample")["sourceInfo"]
            .as_str()
            .expect("sourceInfo")
            .ends_with("/usr/local/bin/sbom-sample")
    );
    let files: Vec<&str> = doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["fileName"].as_str())
        .collect();
    // Debian's /lib is a symlink to usr/lib: the database is stored there.
    assert!(files.contains(&"/usr/lib/apk/db/installed"), "{files:?}");
    assert!(files.contains(&"/usr/local/bin/sbom-sample"), "{files:?}");
    if has_go {
        // The Go toolchain the binary says it was built with, as `go
        // version` would print it: the `go1.` string in its build info.
        let data = std::fs::read(go_binary).expect("read");
        let at = data
            .windows(14)
            .position(|w| w == b"\xff Go buildinf:")
            .expect("Go build info");
        let len = usize::from(data[at + 32]);
        let go = String::from_utf8_lossy(&data[at + 33..at + 33 + len]).into_owned();
        assert!(go.starts_with("go1."), "{go}");
        assert!(
            purls
                .iter()
                .any(|p| *p == format!("pkg:golang/stdlib@{}", &go[2..])),
            "{go} not in {purls:?}"
        );
        assert!(files.contains(&"/usr/local/bin/docker-credential-pass"));
    }
}

/// Python's own view of what is installed (`importlib.metadata`) in a
/// venv with pip and a local wheel is what the SBOM lists.
#[test]
fn python_packages_match_importlib_metadata() {
    let t = "python_packages_match_importlib_metadata";
    let Some(runtimes) = strata_testutil::env_or_skip(t, "STRATA_TEST_DEBIAN_RUNTIMES_TAR") else {
        return;
    };
    let Some(env) = Env::new(t) else { return };
    env.ok(&["import", &runtimes, "strata-test/debian:runtimes"]);
    env.write("wheel/hello/__init__.py", "def greet():\n    return 'hi'\n");
    env.write(
        "wheel/hello-1.0.dist-info/METADATA",
        "Metadata-Version: 2.1\nName: hello\nVersion: 1.0\nLicense-Expression: MIT\n",
    );
    env.write(
        "wheel/hello-1.0.dist-info/WHEEL",
        "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    env.write("wheel/hello-1.0.dist-info/RECORD", "");
    env.write(
        "Dockerfile",
        "FROM strata-test/debian:runtimes\n\
         ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1\n\
         COPY wheel /src/wheel\n\
         RUN python3 -m venv /venv && cd /src/wheel \
          && python3 -m zipfile -c /tmp/hello-1.0-py3-none-any.whl hello hello-1.0.dist-info \
          && /venv/bin/pip install --no-compile --no-index /tmp/hello-1.0-py3-none-any.whl \
          && /venv/bin/python -c 'import importlib.metadata as m; print(\"\".join(sorted(d.metadata[\"Name\"] + chr(9) + d.version + chr(10) for d in m.distributions())), end=\"\")' > /python-packages.txt\n",
    );
    let out = env.build_local("out", &["--sbom=true"]);
    let listed = std::fs::read_to_string(out.join("python-packages.txt")).expect("list");
    let expected = pairs(&listed);
    assert!(expected.iter().any(|(n, _)| n == "hello"), "{listed}");
    assert!(expected.iter().any(|(n, _)| n == "pip"), "{listed}");
    let doc = statement_predicate(&out.join("sbom.spdx.json"));
    // Debian's own Python modules outside the venv may add packages; the
    // venv's are each listed.
    let found = packages_of(&doc, "pypi");
    for p in &expected {
        assert!(found.contains(p), "{p:?} not in {found:?}");
    }
}

/// `scan-stage=true`: the build stage's SBOM is pushed beside the
/// image's, read by imagetools as an additional SPDX document named
/// `sbom-build`, and written as `sbom-build.spdx.json` by a local output.
#[test]
fn scan_stage_adds_the_stages_sboms() {
    let t = "scan_stage_adds_the_stages_sboms";
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    if !imagetools_available(t) {
        return;
    }
    let Some(env) = Env::new(t).and_then(|e| e.with_debian(t)) else {
        return;
    };
    env.write(
        "node_modules/builder-only/package.json",
        r#"{"name":"builder-only","version":"2.0.0"}"#,
    );
    env.write(
        "Dockerfile",
        "FROM strata-test/debian:bookworm AS build\n\
         COPY node_modules /src/node_modules\n\
         RUN echo artefact > /artefact\n\
         FROM scratch\n\
         COPY --from=build /artefact /artefact\n",
    );
    let name = format!("{reg}/{}:1", unique("stages"));
    env.ok(&[
        "build",
        "--insecure-registry",
        &reg,
        "-t",
        &name,
        "--push",
        "--attest",
        "type=sbom,scan-stage=true",
        ".",
    ]);
    let sbom = env.imagetools_sbom(&name);
    assert_eq!(sbom["SPDX"]["name"], "sbom");
    assert!(packages_of(&sbom["SPDX"], "npm").is_empty());
    let extra = sbom["AdditionalSPDXs"].as_array().expect("AdditionalSPDXs");
    assert_eq!(extra.len(), 1, "{sbom}");
    assert_eq!(extra[0]["name"], "sbom-build");
    assert_eq!(
        packages_of(&extra[0], "npm"),
        [("builder-only".to_owned(), "2.0.0".to_owned())]
    );
    assert!(!packages_of(&extra[0], "deb").is_empty());
    let out = env.build_local("out", &["--attest", "type=sbom,scan-stage=true"]);
    assert_eq!(
        &statement_predicate(&out.join("sbom-build.spdx.json")),
        &extra[0]
    );
    assert!(out.join("sbom.spdx.json").exists());
}

#[test]
fn a_generator_image_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "build",
            "--sbom=generator=docker/buildkit-syft-scanner",
            ".",
        ])
        .current_dir(dir.path())
        .env("STRATA_ROOT", dir.path().join("store"))
        .output()
        .expect("spawn strata");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("scans the image in process"), "{err}");
}
