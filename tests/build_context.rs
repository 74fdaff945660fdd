//! End-to-end tests of `strata build --build-context NAME=VALUE` in each
//! form buildx accepts that runs offline here: a directory, an image from
//! the store and from the test registry (`docker-image://`), an OCI layout
//! strata exported (`oci-layout://`), a git repository (`file://` bare
//! repository) and an http URL (a server in the test: the test environment
//! has no https server, and the reference builder refuses http named
//! contexts with "invalid argument", so there is nothing to compare with).
//! The directory and `docker-image://` forms are also compared with
//! BuildKit in tests/compat (`named_context_*`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use strata_testutil::{ImportedStore, serve_forever, stderr};

const BASE: &str = "strata-test/busybox:latest";

fn strata() -> PathBuf {
    strata_testutil::strata_bin(env!("CARGO_BIN_EXE_strata"))
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "strata failed ({:?}):\n{}",
        o.status,
        stderr(o)
    );
    stderr(o)
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
}

/// `strata run --rm IMAGE cat PATH`'s output.
fn cat(s: &ImportedStore, image: &str, path: &str) -> String {
    let o = s.output(&["run", "--rm", image, "cat", path]);
    assert!(o.status.success(), "cat {path}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The progress lines (`#n ...`) of the steps a build reported as cached.
fn cached_steps(progress: &str) -> Vec<String> {
    let mut names = std::collections::HashMap::new();
    let mut out = Vec::new();
    for line in progress.lines() {
        let Some((n, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else {
            continue;
        };
        if rest == "CACHED" {
            out.extend(names.get(n).cloned());
        } else {
            names.entry(n.to_owned()).or_insert_with(|| rest.to_owned());
        }
    }
    out
}

#[test]
fn directory_context_for_copy_mount_and_from() {
    let Some(s) = ImportedStore::new("directory_context_for_copy_mount_and_from", &strata()) else {
        return;
    };
    let extra = s.dir.join("extra");
    write(
        &extra,
        &[
            ("a.txt", "from a\n"),
            ("sub/b.txt", "from b\n"),
            ("sub/secret.txt", "left out\n"),
            (".dockerignore", "sub/secret.txt\n"),
        ],
    );
    let ctx = s.dir.join("ctx");
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "FROM {BASE}\nCOPY --from=extra a.txt /a.txt\nRUN --mount=from=extra,target=/m cat /m/sub/b.txt > /b.txt && ls /m/sub > /listing && stat -c %u:%g /m/a.txt > /owner\n"
            ),
        )],
    );
    let named = format!("extra={}", extra.display());
    let build = || {
        ok(&s.output(&[
            "build",
            "--progress",
            "plain",
            "--build-context",
            &named,
            "-t",
            "withdir:1",
            ctx.to_str().unwrap(),
        ]))
    };
    let first = build();
    assert!(
        first.contains("[context extra] load from client"),
        "{first}"
    );
    let o = s.output(&[
        "build",
        "--print",
        "--build-context",
        &named,
        ctx.to_str().unwrap(),
    ]);
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(
        plan.contains(&format!(
            "reads context extra (directory {}) (COPY --from, line 2)",
            extra.display()
        )),
        "{plan}"
    );
    assert_eq!(cat(&s, "withdir:1", "/a.txt"), "from a\n");
    assert_eq!(cat(&s, "withdir:1", "/b.txt"), "from b\n");
    // The directory's own .dockerignore applies; its files are root's.
    assert_eq!(cat(&s, "withdir:1", "/listing"), "b.txt\n");
    assert_eq!(cat(&s, "withdir:1", "/owner"), "0:0\n");

    // Keys are by content: a change to b.txt re-runs the RUN that mounts
    // the directory, not the COPY of a.txt.
    std::fs::write(extra.join("sub/b.txt"), "b changed\n").unwrap();
    let second = build();
    let cached = cached_steps(&second);
    assert!(
        cached.iter().any(|c| c.contains("COPY")),
        "COPY of an unchanged file must stay cached:\n{second}"
    );
    assert!(
        !cached.iter().any(|c| c.contains("RUN")),
        "the RUN reading the changed file must run:\n{second}"
    );
    assert_eq!(cat(&s, "withdir:1", "/b.txt"), "b changed\n");
    // Nothing changed: everything is cached, the context too.
    let third = build();
    assert!(
        cached_steps(&third)
            .iter()
            .any(|c| c.contains("[context extra]")),
        "{third}"
    );
    // A change to a.txt re-runs the COPY.
    std::fs::write(extra.join("a.txt"), "a changed\n").unwrap();
    let fourth = build();
    assert!(
        !cached_steps(&fourth).iter().any(|c| c.contains("COPY")),
        "{fourth}"
    );
    assert_eq!(cat(&s, "withdir:1", "/a.txt"), "a changed\n");

    // FROM a directory: its files are the image's first layer.
    let from_dir = s.dir.join("from-dir");
    write(
        &from_dir,
        &[(
            "Dockerfile",
            &format!("FROM extra\nCOPY --from={BASE} /bin /bin\nRUN cat /sub/b.txt > /again\n"),
        )],
    );
    ok(&s.output(&[
        "build",
        "-q",
        "--build-context",
        &named,
        "-t",
        "fromdir:1",
        from_dir.to_str().unwrap(),
    ]));
    assert_eq!(cat(&s, "fromdir:1", "/again"), "b changed\n");
    assert_eq!(cat(&s, "fromdir:1", "/a.txt"), "a changed\n");
}

#[test]
fn named_context_replaces_a_stage() {
    let Some(s) = ImportedStore::new("named_context_replaces_a_stage", &strata()) else {
        return;
    };
    let extra = s.dir.join("tools");
    write(&extra, &[("tool.sh", "echo tool\n")]);
    let ctx = s.dir.join("ctx");
    // The stage `tools` would fail; the context replaces it, so it never
    // runs, and the stage it read (`broken`) is not built either.
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "FROM {BASE} AS broken\nRUN exit 3\nFROM {BASE} AS tools\nCOPY --from=broken /etc/hostname /x\nRUN exit 4\nFROM {BASE}\nCOPY --from=tools /tool.sh /tool.sh\nRUN sh /tool.sh > /out\n"
            ),
        )],
    );
    let err = ok(&s.output(&[
        "build",
        "--progress",
        "plain",
        "--build-context",
        &format!("tools={}", extra.display()),
        "-t",
        "replaced:1",
        ctx.to_str().unwrap(),
    ]));
    assert!(!err.contains("exit 3") && !err.contains("exit 4"), "{err}");
    assert_eq!(cat(&s, "replaced:1", "/out"), "tool\n");
    // `--print` says so, and no longer lists the stage `broken` as needed.
    let o = s.output(&[
        "build",
        "--print",
        "--build-context",
        &format!("tools={}", extra.display()),
        ctx.to_str().unwrap(),
    ]);
    let plan = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = format!("(directory {})", extra.display());
    assert!(
        plan.contains(&format!("#1 tools: replaced by context tools {dir}")),
        "{plan}"
    );
    assert!(plan.contains("level 0: tools\n"), "{plan}");
    assert!(
        plan.contains("#0 broken: FROM image strata-test/busybox:latest [pruned by --target]"),
        "{plan}"
    );
}

#[test]
fn image_contexts_from_the_store_and_a_registry() {
    let t = "image_contexts_from_the_store_and_a_registry";
    let Some(s) = ImportedStore::new(t, &strata()) else {
        return;
    };
    let ctx = s.dir.join("ctx");
    write(
        &ctx,
        &[(
            "Dockerfile",
            "FROM alpine\nCOPY --from=alpine:latest /bin/busybox /copied\nRUN test -x /copied && echo ok > /ok\n",
        )],
    );
    // `FROM alpine` and `--from=alpine:latest` are one name; the store has
    // the image, nothing is pulled.
    ok(&s.output(&[
        "build",
        "-q",
        "--build-context",
        &format!("alpine=docker-image://{BASE}"),
        "-t",
        "fromstore:1",
        ctx.to_str().unwrap(),
    ]));
    assert_eq!(cat(&s, "fromstore:1", "/ok"), "ok\n");
    let Some(reg) = strata_testutil::registry(t) else {
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let remote = format!("{reg}/named-context-{}-{nanos}:1", std::process::id());
    ok(&s.output(&["tag", BASE, &remote]));
    let pushed = s.output(&["push", "-q", &remote]);
    ok(&pushed);
    // By digest, as buildx's docs pin one: the digest the registry has.
    let digest = String::from_utf8_lossy(&pushed.stdout).trim().to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");
    // A store without the image pulls it.
    let Some(other) = ImportedStore::new(t, &strata()) else {
        return;
    };
    ok(&other.output(&["rmi", BASE]));
    let pinned = format!("{}@{digest}", remote.rsplit_once(':').unwrap().0);
    let err = ok(&other.output(&[
        "build",
        "--progress",
        "plain",
        "--build-context",
        &format!("alpine=docker-image://{pinned}"),
        "-t",
        "fromregistry:1",
        ctx.to_str().unwrap(),
    ]));
    assert!(err.contains("pull"), "{err}");
    assert_eq!(cat(&other, "fromregistry:1", "/ok"), "ok\n");
}

#[test]
fn oci_layout_context() {
    let Some(s) = ImportedStore::new("oci_layout_context", &strata()) else {
        return;
    };
    let src = s.dir.join("src");
    write(
        &src,
        &[(
            "Dockerfile",
            &format!("FROM {BASE}\nRUN echo from-layout > /marker\n"),
        )],
    );
    let layout = s.dir.join("layout");
    ok(&s.output(&[
        "build",
        "-q",
        "-o",
        &format!("type=oci,dest={},tar=false", layout.display()),
        src.to_str().unwrap(),
    ]));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let ctx = s.dir.join("ctx");
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "FROM {BASE} AS copier\nCOPY --from=lay /marker /copied\nFROM lay\nRUN cp /marker /again\n"
            ),
        )],
    );
    // The only image of the index (no tag names it), then by digest.
    for value in [
        format!("oci-layout://{}", layout.display()),
        format!("oci-layout://{}@{manifest}", layout.display()),
    ] {
        ok(&s.output(&[
            "build",
            "-q",
            "--build-context",
            &format!("lay={value}"),
            "--target",
            "copier",
            "-t",
            "copied:1",
            ctx.to_str().unwrap(),
        ]));
        assert_eq!(cat(&s, "copied:1", "/copied"), "from-layout\n");
        ok(&s.output(&[
            "build",
            "-q",
            "--build-context",
            &format!("lay={value}"),
            "-t",
            "fromlayout:1",
            ctx.to_str().unwrap(),
        ]));
        assert_eq!(cat(&s, "fromlayout:1", "/again"), "from-layout\n");
    }
    // A layout naming two images: `:TAG` picks by the tag its index
    // gives (`org.opencontainers.image.ref.name`); no tag means `latest`,
    // which names neither here, and there is no single image to fall back on.
    let tagged = s.dir.join("tagged");
    ok(&s.output(&[
        "build",
        "-q",
        "-t",
        "layout/one:v1",
        "-t",
        "layout/one:v2",
        "-o",
        &format!("type=oci,dest={},tar=false", tagged.display()),
        src.to_str().unwrap(),
    ]));
    ok(&s.output(&[
        "build",
        "-q",
        "--build-context",
        &format!("lay=oci-layout://{}:v2", tagged.display()),
        "-t",
        "bytag:1",
        ctx.to_str().unwrap(),
    ]));
    assert_eq!(cat(&s, "bytag:1", "/again"), "from-layout\n");
    let untagged = s.output(&[
        "build",
        "--build-context",
        &format!("lay=oci-layout://{}", tagged.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(untagged.status.code(), Some(2), "{}", stderr(&untagged));
    assert!(
        stderr(&untagged).contains("no image tagged \"latest\""),
        "{}",
        stderr(&untagged)
    );
    // A digest the layout does not hold.
    let bad = s.output(&[
        "build",
        "--build-context",
        &format!(
            "lay=oci-layout://{}@sha256:{}",
            layout.display(),
            "0".repeat(64)
        ),
        ctx.to_str().unwrap(),
    ]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        stderr(&bad).contains("lay=oci-layout://"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn git_and_http_contexts() {
    let Some(s) = ImportedStore::new("git_and_http_contexts", &strata()) else {
        return;
    };
    let repo = s.dir.join("repo");
    write(
        &repo,
        &[("app/msg.txt", "from git\n"), ("top.txt", "top\n")],
    );
    let git = |dir: &Path, args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    };
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "c"]);
    git(&repo, &["branch", "release"]);
    let bare = s.dir.join("repo.git");
    git(
        &s.dir,
        &[
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let body = b"downloaded as it is\n".to_vec();
    let addr = serve_forever(body.clone());
    let ctx = s.dir.join("ctx");
    write(
        &ctx,
        &[(
            "Dockerfile",
            &format!(
                "FROM {BASE}\nCOPY --from=src msg.txt /msg.txt\nRUN --mount=from=src,target=/src ls -a /src > /src-listing\nCOPY --from=web context /downloaded\nRUN stat -c %a /downloaded > /mode\n"
            ),
        )],
    );
    ok(&s.output(&[
        "build",
        "-q",
        "--build-context",
        &format!("src=file://{}#release:app", bare.display()),
        "--build-context",
        &format!("web=http://{addr}/file.bin"),
        "-t",
        "remote:1",
        ctx.to_str().unwrap(),
    ]));
    assert_eq!(cat(&s, "remote:1", "/msg.txt"), "from git\n");
    // The subdirectory only, and no `.git` (BuildKit's git source has none).
    assert_eq!(cat(&s, "remote:1", "/src-listing"), ".\n..\nmsg.txt\n");
    // An http context is one file named `context`, not unpacked, 0600.
    assert_eq!(cat(&s, "remote:1", "/downloaded").as_bytes(), body);
    assert_eq!(cat(&s, "remote:1", "/mode"), "600\n");
}

#[test]
fn bad_contexts_are_usage_errors() {
    let Some(s) = ImportedStore::new("bad_contexts_are_usage_errors", &strata()) else {
        return;
    };
    let ctx = s.dir.join("ctx");
    write(&ctx, &[("Dockerfile", &format!("FROM {BASE}\n"))]);
    for (value, says) in [
        (
            "missing=./no-such-dir",
            "failed to get build context missing",
        ),
        ("file=./ctx/Dockerfile", "not a directory"),
        ("Upper=./ctx", "invalid context name Upper"),
        ("novalue", "expected key=value"),
        ("other=target:x", "strata bake"),
        ("img=docker-image://Alpine", "docker-image://Alpine"),
    ] {
        let o = s.output(&["build", "--build-context", value, ctx.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{value}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{value}: {}", stderr(&o));
    }
}
