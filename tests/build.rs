//! End-to-end tests of `strata build` with the real binary, real RUN steps
//! on the busybox fixture, and `docker load` as the consumer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
}

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

impl Env {
    /// A fresh store with the busybox fixture imported as `strata-test/busybox`.
    fn new(test: &str) -> Option<Self> {
        if !strata_testutil::require_root(test) {
            return None;
        }
        let tar = strata_testutil::busybox_tar(test)?;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let dir = tmp.path().join("work");
        std::fs::create_dir_all(&dir).unwrap();
        let env = Env {
            _tmp: tmp,
            root,
            dir,
        };
        // A fixed date: every test store has the same base image ID, so
        // builds in two stores can be compared.
        let out = Command::new(strata())
            .args([
                "import",
                tar.to_str().unwrap(),
                "strata-test/busybox:latest",
            ])
            .env("STRATA_ROOT", &env.root)
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(env)
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(strata())
            .args(args)
            .env("STRATA_ROOT", &self.root)
            .current_dir(&self.dir)
            .output()
            .unwrap()
    }

    /// Writes a context folder with `files` (path, content).
    fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let ctx = self.dir.join(name);
        for (p, c) in files {
            let p = ctx.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        ctx
    }

    fn build(&self, ctx: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.strata(&args)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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

const APP: &str = r#"FROM strata-test/busybox:latest AS base
ARG NAME=world
ENV GREETING="hi there"
WORKDIR /app
COPY hello.txt ./
COPY sub /app/sub/
RUN echo "$GREETING $NAME" > /app/out.txt && rm /bin/vi && rm -rf /home && mkdir /home
CMD ["cat", "/app/out.txt"]
"#;

fn app_context(env: &Env) -> PathBuf {
    env.context(
        "app",
        &[
            ("Dockerfile", APP),
            ("hello.txt", "hello\n"),
            ("sub/a", "a\n"),
            ("skip.log", "ignored\n"),
            (".dockerignore", "*.log\n"),
        ],
    )
}

#[test]
fn built_image_loads_and_runs_in_docker() {
    let Some(env) = Env::new("built_image_loads_and_runs_in_docker") else {
        return;
    };
    let Some(host) = strata_testutil::docker_host("built_image_loads_and_runs_in_docker") else {
        return;
    };
    let ctx = app_context(&env);
    let tar = env.dir.join("app.tar");
    let tag = "strata-e2e/app:1";
    ok(&env.build(
        &ctx,
        &[
            "-t",
            tag,
            "-o",
            &format!("type=docker,dest={}", tar.display()),
        ],
    ));
    let docker = |args: &[&str]| {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", &host)
            .output()
            .unwrap()
    };
    let load = docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(load.status.success(), "docker load: {}", stderr(&load));
    let run = docker(&["run", "--rm", "--network", "none", tag]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "hi there world\n",
        "{}",
        stderr(&run)
    );
    // The deleted file and the replaced directory are gone; COPY kept content.
    let check = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        tag,
        "sh",
        "-c",
        "test ! -e /bin/vi && test ! -e /home/alice && cat /app/hello.txt /app/sub/a && test ! -e /app/skip.log && pwd",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&check.stdout),
        "hello\na\n/app\n",
        "{}",
        stderr(&check)
    );
    let _ = docker(&["rmi", tag]);
}

#[test]
fn rebuild_is_fully_cached_and_gives_the_same_image() {
    let Some(env) = Env::new("rebuild_is_fully_cached_and_gives_the_same_image") else {
        return;
    };
    let ctx = app_context(&env);
    let first = env.build(&ctx, &["-q"]);
    ok(&first);
    let log = ok(&env.build(&ctx, &["-t", "app:2"]));
    assert!(log.contains("steps run: 0"), "{log}");
    assert!(log.contains("#7 CACHED"), "{log}");
    let again = env.build(&ctx, &["-q"]);
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&again.stdout)
    );
    // --no-cache runs the RUN again.
    let log = ok(&env.build(&ctx, &["--no-cache"]));
    assert!(log.contains("steps run: 1"), "{log}");
}

#[test]
fn changing_one_file_reruns_only_the_steps_that_read_it() {
    let Some(env) = Env::new("changing_one_file_reruns_only_the_steps_that_read_it") else {
        return;
    };
    let df = "FROM strata-test/busybox:latest\nCOPY a /a\nRUN cat /a > /a2\nCOPY b /b\nRUN cat /b > /b2\n";
    let ctx = env.context("ctx", &[("Dockerfile", df), ("a", "1"), ("b", "1")]);
    ok(&env.build(&ctx, &[]));
    std::fs::write(ctx.join("b"), "2").unwrap();
    let log = ok(&env.build(&ctx, &[]));
    assert!(
        log.contains("#2 CACHED") && log.contains("#3 CACHED"),
        "{log}"
    );
    assert!(
        !log.contains("#4 CACHED") && !log.contains("#5 CACHED"),
        "{log}"
    );
    assert!(log.contains("steps run: 1"), "{log}");
    // An mtime-only change is not a change.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("a"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let log = ok(&env.build(&ctx, &[]));
    assert!(log.contains("steps run: 0"), "{log}");
}

#[test]
fn multi_stage_copy_from_and_target() {
    let Some(env) = Env::new("multi_stage_copy_from_and_target") else {
        return;
    };
    let df = "FROM strata-test/busybox:latest AS build\nRUN echo built > /artifact\n\
              FROM strata-test/busybox:latest AS unused\nRUN exit 7\n\
              FROM scratch\nCOPY --from=build /artifact /artifact\nCOPY --from=0 /bin/busybox /bin/busybox\n";
    let ctx = env.context("ms", &[("Dockerfile", df)]);
    let out = env.dir.join("rootfs");
    let log = ok(&env.build(&ctx, &["-o", &format!("type=local,dest={}", out.display())]));
    // Progress names a step by its source, flags included, as BuildKit does.
    assert!(
        log.contains("[stage-2 2/3] COPY --from=build /artifact /artifact"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("artifact")).unwrap(),
        "built\n"
    );
    assert!(out.join("bin/busybox").is_file());
    // --target stops at the named stage; the failing unused stage never runs.
    let log = ok(&env.build(&ctx, &["--target", "build"]));
    assert!(!log.contains("exit 7"), "{log}");
}

#[test]
fn failing_run_reports_step_command_and_exit_code() {
    let Some(env) = Env::new("failing_run_reports_step_command_and_exit_code") else {
        return;
    };
    let ctx = env.context(
        "fail",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN echo before && exit 3\n",
        )],
    );
    let out = env.build(&ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.contains("echo before && exit 3"), "{err}");
    assert!(
        err.contains("#2 before"),
        "output is streamed with the step prefix: {err}"
    );
}

#[test]
fn dockerfile_errors_name_file_line_and_column() {
    let Some(env) = Env::new("dockerfile_errors_name_file_line_and_column") else {
        return;
    };
    let ctx = env.context(
        "bad",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\n  RUNN echo\n",
        )],
    );
    let out = env.build(&ctx, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:2:3: unknown instruction: RUNN (did you mean RUN?)"),
        "{err}"
    );
    assert!(err.contains("2 |   RUNN echo"), "{err}");
    let missing = env.context("missing", &[("Dockerfile", "FROM nope/nothing:1\n")]);
    let err = stderr(&env.build(&missing, &[]));
    // Not in the store, so FROM pulls it; this machine has no route to
    // Docker Hub, and the error says where in the Dockerfile and why.
    assert!(
        err.contains("Dockerfile:1:1: pulling nope/nothing:1: cannot reach registry"),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    let Some(env) = Env::new("usage_errors_exit_with_2") else {
        return;
    };
    let ctx = app_context(&env);
    assert_eq!(
        env.build(&ctx, &["--network", "bogus"]).status.code(),
        Some(2)
    );
    // --network and --progress name their values and suggest on a typo.
    for (flag, typo, meant) in [
        ("--network", "hots", "host"),
        ("--progress", "plian", "plain"),
    ] {
        let o = env.strata(&["build", flag, typo, ctx.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            stderr(&o).contains(&format!("a similar value exists: '{meant}'")),
            "{}",
            stderr(&o)
        );
    }
    for bad in ["windows/amd64", "linux", "linux/amd64,linux/amd64"] {
        assert_eq!(
            env.build(&ctx, &["--platform", bad]).status.code(),
            Some(2),
            "--platform {bad}"
        );
    }
    assert_eq!(
        env.build(&ctx, &["-o", "type=nope,dest=x"]).status.code(),
        Some(2)
    );
    assert_eq!(
        env.strata(&["build", "/definitely/not/here"]).status.code(),
        Some(2)
    );
}

#[test]
fn builds_are_reproducible_across_paths_mtimes_and_stores() {
    let Some(a) = Env::new("builds_are_reproducible_across_paths_mtimes_and_stores") else {
        return;
    };
    let Some(b) = Env::new("builds_are_reproducible_across_paths_mtimes_and_stores") else {
        return;
    };
    let ca = app_context(&a);
    let cb = b.context(
        "elsewhere/deeper",
        &[
            ("Dockerfile", APP),
            ("hello.txt", "hello\n"),
            ("sub/a", "a\n"),
            (".dockerignore", "*.log\n"),
        ],
    );
    let f = std::fs::File::options()
        .write(true)
        .open(cb.join("hello.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
        .unwrap();
    let ia = a.build(&ca, &["-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    let ib = b.build(&cb, &["-q", "--build-arg", "SOURCE_DATE_EPOCH=1700000000"]);
    ok(&ia);
    ok(&ib);
    assert_eq!(
        String::from_utf8_lossy(&ia.stdout),
        String::from_utf8_lossy(&ib.stdout)
    );
    let inspect = a.strata(&[
        "inspect",
        "--format",
        "{{.Created}}",
        String::from_utf8_lossy(&ia.stdout).trim(),
    ]);
    assert!(
        String::from_utf8_lossy(&inspect.stdout).contains("2023-11-14T22:13:20Z"),
        "{}",
        String::from_utf8_lossy(&inspect.stdout)
    );
}

#[test]
fn example_multi_stage_c_build_loads_and_runs_and_rebuilds_cached() {
    let test = "example_multi_stage_c_build_loads_and_runs_and_rebuilds_cached";
    let Some(env) = Env::new(test) else { return };
    let Some(debian) = strata_testutil::debian_tar(test) else {
        return;
    };
    let Some(host) = strata_testutil::docker_host(test) else {
        return;
    };
    ok(&env.strata(&[
        "import",
        debian.to_str().unwrap(),
        "strata-test/debian:bookworm",
    ]));
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello-c");
    let tar = env.dir.join("hello-c.tar");
    let tag = "strata-e2e/hello-c:1";
    ok(&env.build(
        &example,
        &[
            "-t",
            tag,
            "-o",
            &format!("type=docker,dest={}", tar.display()),
        ],
    ));
    let docker = |args: &[&str]| {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", &host)
            .output()
            .unwrap()
    };
    let load = docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(load.status.success(), "docker load: {}", stderr(&load));
    let run = docker(&["run", "--rm", "--network", "none", tag]);
    assert!(
        String::from_utf8_lossy(&run.stdout)
            .starts_with("Hello from a static C binary built by strata"),
        "{}",
        stderr(&run)
    );
    let _ = docker(&["rmi", tag]);
    let log = ok(&env.build(&example, &["-t", tag]));
    assert!(
        log.contains("steps run: 0") && log.contains("layers built: 0"),
        "{log}"
    );
}

#[test]
fn debug_dump_ast_prints_the_reference_format() {
    let tmp = tempfile::tempdir().unwrap();
    let df = tmp.path().join("Dockerfile");
    std::fs::write(&df, "FROM busybox AS b\nCOPY --from=b --chown=1:1 a /b\nENV A=1 B=\"x y\"\nONBUILD RUN echo hi\n").unwrap();
    let out = Command::new(strata())
        .args(["debug", "dump-ast"])
        .arg(&df)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "(from \"busybox\" \"AS\" \"b\")\n(copy [\"--from=b\" \"--chown=1:1\"] \"a\" \"/b\")\n(env \"A\" \"1\" \"=\" \"B\" \"\\\"x y\\\"\" \"=\")\n(onbuild (run \"echo hi\"))\n"
    );
    std::fs::write(&df, "FROM x\nENV PATH\n").unwrap();
    let out = Command::new(strata())
        .args(["debug", "dump-ast"])
        .arg(&df)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(":2:1: ENV must have two arguments"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_mounts_cache_bind_tmpfs_and_secret() {
    let test = "run_mounts_cache_bind_tmpfs_and_secret";
    let Some(env) = Env::new(test) else { return };
    let df = "FROM strata-test/busybox:latest\n\
              RUN --mount=type=cache,target=/cache,id=c1 echo run >> /cache/log && wc -l < /cache/log > /count\n\
              RUN --mount=type=bind,source=data,target=/in cat /in/x > /copied && ! touch /in/y 2>/dev/null\n\
              RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/f && test -f /scratch/f\n\
              RUN --mount=type=secret,id=tok,required=true cat /run/secrets/tok | wc -c > /secret-len\n";
    let ctx = env.context(
        "mounts",
        &[("Dockerfile", df), ("data/x", "from-context\n")],
    );
    let secret = env.dir.join("tok.txt");
    std::fs::write(&secret, "s3cr3t-value").unwrap();
    let out = env.dir.join("rootfs.tar");
    let secret_arg = format!("id=tok,src={}", secret.display());
    ok(&env.build(
        &ctx,
        &[
            "--secret",
            &secret_arg,
            "-o",
            &format!("type=tar,dest={}", out.display()),
        ],
    ));
    let mut found = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut e, &mut s);
        found.insert(path, s);
    }
    assert_eq!(found.get("count").map(|s| s.trim()), Some("1"));
    assert_eq!(
        found.get("copied").map(String::as_str),
        Some("from-context\n")
    );
    assert_eq!(found.get("secret-len").map(|s| s.trim()), Some("12"));
    for mount_target in ["cache/log", "in/x", "scratch/f", "run/secrets/tok"] {
        assert!(
            !found.contains_key(mount_target),
            "{mount_target} leaked into the image"
        );
    }
    assert!(
        !found.values().any(|v| v.contains("s3cr3t-value")),
        "the secret's value is in the image"
    );
    // The cache mount persists between builds: a no-cache rebuild sees two runs.
    ok(&env.build(
        &ctx,
        &[
            "--no-cache",
            "--secret",
            &secret_arg,
            "-o",
            &format!("type=local,dest={}", env.dir.join("r2").display()),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(env.dir.join("r2/count"))
            .unwrap()
            .trim(),
        "2"
    );
    // A required secret that is not given is a clear error.
    let err = stderr(&env.build(&ctx, &["--no-cache"]));
    assert!(err.contains("secret tok is required"), "{err}");
}

/// Two stages that can only both finish if they run at the same time: each
/// leaves a marker in a shared cache mount and waits (up to 15 s) for the
/// other's. Concurrency shown by a rendezvous, not by timing.
const RENDEZVOUS: &str = r#"FROM strata-test/busybox:latest AS left
RUN --mount=type=cache,id=rendezvous,target=/r,sharing=shared \
    touch /r/left-$TOKEN; i=0; while [ ! -f /r/right-$TOKEN ]; do i=$((i+1)); [ $i -gt 150 ] && exit 7; sleep 0.1; done; echo left > /left.txt
FROM strata-test/busybox:latest AS right
RUN --mount=type=cache,id=rendezvous,target=/r,sharing=shared \
    touch /r/right-$TOKEN; i=0; while [ ! -f /r/left-$TOKEN ]; do i=$((i+1)); [ $i -gt 150 ] && exit 7; sleep 0.1; done; echo right > /right.txt
FROM strata-test/busybox:latest
COPY --from=left /left.txt /
COPY --from=right /right.txt /
"#;

#[test]
fn independent_stages_run_in_parallel_and_jobs_bounds_them() {
    let Some(env) = Env::new("independent_stages_run_in_parallel_and_jobs_bounds_them") else {
        return;
    };
    let df = RENDEZVOUS.replace("$TOKEN", "one");
    let ctx = env.context("par", &[("Dockerfile", &df)]);
    let out = env.build(&ctx, &["-t", "par:1", "--jobs", "2"]);
    ok(&out);
    let run = env.strata(&["run", "--rm", "par:1", "cat", "/left.txt", "/right.txt"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout), "left\nright\n");
    // With one job the stages run one after the other, so the rendezvous
    // cannot happen: the first stage gives up (exit 7) and the build fails,
    // naming that step, and the other stage is not run at all.
    let df = RENDEZVOUS.replace("$TOKEN", "two");
    let ctx = env.context("serial", &[("Dockerfile", &df)]);
    let out = env.build(&ctx, &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("exit code: 7") || err.contains("exit code 7"),
        "{err}"
    );
    // A step line is `#n [stage i/k] RUN --mount=… touch /r/…`.
    let started = err.matches("] RUN --mount=").count();
    assert_eq!(
        started, 1,
        "the second stage must not start after the first failed: {err}"
    );
}

#[test]
fn the_first_failure_cancels_a_step_running_in_another_stage() {
    let Some(env) = Env::new("the_first_failure_cancels_a_step_running_in_another_stage") else {
        return;
    };
    let df = r#"FROM strata-test/busybox:latest AS slow
RUN sleep 60
RUN echo never-reached
FROM strata-test/busybox:latest AS broken
RUN sleep 1; exit 3
FROM strata-test/busybox:latest
COPY --from=slow /etc/hostname /a
COPY --from=broken /etc/hostname /b
"#;
    let ctx = env.context("cancel", &[("Dockerfile", df)]);
    let out = env.build(&ctx, &["--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    // The reported failure is the real one, not the cancellation it caused.
    assert!(
        err.contains("exit code: 3") || err.contains("exit code 3"),
        "{err}"
    );
    assert!(!err.contains("never-reached\n#"), "{err}");
    assert!(!err.contains("RUN echo never-reached"), "{err}");
}

fn files_hashed(err: &str) -> usize {
    err.lines()
        .find_map(|l| l.strip_prefix("context files hashed: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no 'context files hashed' line in: {err}"))
}

#[test]
fn unchanged_context_files_are_not_read_again() {
    let Some(env) = Env::new("unchanged_context_files_are_not_read_again") else {
        return;
    };
    let mut files: Vec<(String, String)> = (0..50)
        .map(|i| (format!("src/f{i}.txt"), format!("content {i}\n")))
        .collect();
    files.push((
        "Dockerfile".into(),
        "FROM strata-test/busybox:latest\nCOPY src /src\n".into(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let ctx = env.context("meta", &refs);
    let first = stderr(&env.build(&ctx, &["-t", "meta:1"]));
    assert_eq!(files_hashed(&first), 50, "{first}");
    // Nothing changed: every file is known by its stat data.
    let second = stderr(&env.build(&ctx, &["-t", "meta:1"]));
    assert_eq!(files_hashed(&second), 0, "{second}");
    assert!(second.contains("steps run: 0"), "{second}");
    // A touched file is read again (its mtime changed) but, its content being
    // the same, the step stays cached; an edited one changes the key.
    let f3 = ctx.join("src/f3.txt");
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(&f3)
        .unwrap()
        .set_modified(now)
        .unwrap();
    let third = stderr(&env.build(&ctx, &["-t", "meta:1"]));
    assert_eq!(files_hashed(&third), 1, "{third}");
    assert!(third.contains("#2 CACHED"), "{third}");
    std::fs::write(ctx.join("src/f4.txt"), "changed, same length!\n").unwrap();
    let fourth = stderr(&env.build(&ctx, &["-t", "meta:2"]));
    assert_eq!(files_hashed(&fourth), 1, "{fourth}");
    assert!(!fourth.contains("#2 CACHED"), "{fourth}");
    // The same context named by another path shares the entries.
    let abs = ctx.canonicalize().unwrap();
    let via_abs = env.strata(&[
        "build",
        "--progress",
        "plain",
        "-t",
        "meta:2",
        abs.to_str().unwrap(),
    ]);
    assert_eq!(files_hashed(&stderr(&via_abs)), 0);
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    let Some(env) = Env::new("no_cache_filter_reruns_only_the_named_stage") else {
        return;
    };
    let df = "FROM strata-test/busybox:latest AS builder\nRUN echo built > /out\n\
              FROM strata-test/busybox:latest\nRUN echo final > /final\nCOPY --from=builder /out /out\n";
    let ctx = env.context("ncf", &[("Dockerfile", df)]);
    ok(&env.build(&ctx, &["-t", "ncf:1"]));
    let again = stderr(&env.build(&ctx, &["-t", "ncf:1", "--no-cache-filter", "builder"]));
    assert!(again.contains("steps run: 1"), "{again}");
    // The builder's output is the same, so the final stage stays cached.
    assert!(again.contains("layers built: 1"), "{again}");
    let usage = env.build(&ctx, &["--no-cache-filter", "nope"]);
    assert_ne!(usage.status.code(), Some(0));
    assert!(stderr(&usage).contains("no stage named \"nope\""));
}

#[test]
fn builder_prune_keep_storage_drops_the_least_recently_used_first() {
    let Some(env) = Env::new("builder_prune_keep_storage_drops_the_least_recently_used_first")
    else {
        return;
    };
    // Two builds, each with a ~2 MB layer only the cache keeps once the
    // images are gone; the first is used longer ago.
    let old = env.context(
        "old",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN head -c 2000000 /dev/urandom > /old\n",
        )],
    );
    let new = env.context(
        "new",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN head -c 2000000 /dev/urandom > /new\n",
        )],
    );
    ok(&env.build(&old, &["-t", "old:1"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(&env.build(&new, &["-t", "new:1"]));
    ok(&env.strata(&["rmi", "old:1", "new:1"]));
    let out = env.strata(&["builder", "prune", "-f", "--keep-storage", "3MB"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Deleted build cache records: 1"), "{text}");
    // The recent one is still cached, the old one runs again.
    let rebuilt = stderr(&env.build(&new, &[]));
    assert!(rebuilt.contains("steps run: 0"), "{rebuilt}");
    let rebuilt = stderr(&env.build(&old, &[]));
    assert!(rebuilt.contains("steps run: 1"), "{rebuilt}");
    let bad = env.strata(&["builder", "prune", "--keep-storage", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn onbuild_triggers_of_the_base_run_first_and_are_not_inherited() {
    let Some(env) = Env::new("onbuild_triggers_of_the_base_run_first_and_are_not_inherited") else {
        return;
    };
    let parent = env.context(
        "onb-parent",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nONBUILD COPY hello.txt /hello.txt\nONBUILD RUN cat /hello.txt > /triggered\n",
        )],
    );
    ok(&env.build(&parent, &["-t", "onb:1"]));
    let cfg = env.strata(&["inspect", "onb:1"]);
    let v: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert_eq!(
        v[0]["Config"]["OnBuild"],
        serde_json::json!([
            "COPY hello.txt /hello.txt",
            "RUN cat /hello.txt > /triggered"
        ])
    );
    let child = env.context(
        "onb-child",
        &[
            ("Dockerfile", "FROM onb:1\nRUN test -f /triggered\n"),
            ("hello.txt", "from the child's context\n"),
        ],
    );
    let out = env.build(&child, &["-t", "onb-child:1"]);
    let err = ok(&out);
    assert!(err.contains("ONBUILD COPY hello.txt /hello.txt"), "{err}");
    let run = env.strata(&["run", "--rm", "onb-child:1", "cat", "/triggered"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "from the child's context\n"
    );
    let cfg = env.strata(&["inspect", "onb-child:1"]);
    let v: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    assert!(
        v[0]["Config"]["OnBuild"].is_null() || v[0]["Config"]["OnBuild"] == serde_json::json!([]),
        "triggers are not inherited: {}",
        v[0]["Config"]
    );
    // A trigger that fails points at the FROM line.
    let broken = env.context("onb-broken", &[("Dockerfile", "\n\nFROM onb:1\n")]);
    let out = env.build(&broken, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("Dockerfile:3"), "{err}");
}

#[test]
fn add_host_and_shm_size_reach_run_steps() {
    let Some(env) = Env::new("add_host_and_shm_size_reach_run_steps") else {
        return;
    };
    let ctx = env.context(
        "hosts",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN grep -E '^10.1.2.3[[:space:]]+db.internal$' /etc/hosts && df -k /dev/shm | tail -1 | awk '{print $2}' > /shm-kb\n",
        )],
    );
    ok(&env.build(
        &ctx,
        &[
            "-t",
            "hosts:1",
            "--add-host",
            "db.internal:10.1.2.3",
            "--shm-size",
            "128m",
        ],
    ));
    let run = env.strata(&["run", "--rm", "hosts:1", "cat", "/shm-kb"]);
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "131072");
    let bad = env.build(&ctx, &["--add-host", "nohost"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = env.build(&ctx, &["--shm-size", "lots"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn progress_rawjson_is_buildkit_shaped_and_tty_draws_a_live_view() {
    let Some(env) = Env::new("progress_rawjson_is_buildkit_shaped_and_tty_draws_a_live_view")
    else {
        return;
    };
    let ctx = env.context(
        "progress",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN echo hello-progress\n",
        )],
    );
    ok(&env.build(&ctx, &[]));
    let out = env.strata(&["build", "--progress", "rawjson", ctx.to_str().unwrap()]);
    let err = ok(&out);
    let lines: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let cached_run = lines.iter().any(|v| {
        v["vertexes"][0]["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("RUN echo hello-progress"))
            && v["vertexes"][0]["cached"] == true
    });
    assert!(cached_run, "{err}");
    // Uncached: the step's output is a base64 log of its vertex.
    let out = env.strata(&[
        "build",
        "--progress",
        "rawjson",
        "--no-cache",
        ctx.to_str().unwrap(),
    ]);
    let err = ok(&out);
    assert!(err.contains("\"logs\""), "{err}");
    assert!(
        err.contains("aGVsbG8tcHJvZ3Jlc3MK"),
        "base64 of hello-progress\\n: {err}"
    ); // "hello-progress\n"
    let bad = env.strata(&["build", "--progress", "fancy", ctx.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(2));
    // tty needs a terminal: run under script(1), which gives one.
    let cmd = format!(
        "STRATA_ROOT={} {} build --progress tty --no-cache {}",
        env.root.display(),
        strata().display(),
        ctx.display()
    );
    let tty = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output();
    let Ok(tty) = tty else {
        strata_testutil::skip("progress tty", "script(1) is not installed");
        return;
    };
    assert!(tty.status.success());
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(screen.contains("RUN echo hello-progress DONE"), "{screen}");
}

#[test]
fn copy_exclude_parents_and_symbolic_chmod() {
    let Some(env) = Env::new("copy_exclude_parents_and_symbolic_chmod") else {
        return;
    };
    let ctx = env.context(
        "copyflags",
        &[
            (
                "Dockerfile",
                "FROM strata-test/busybox:latest\n\
                 COPY --exclude=*.log --exclude=skip src /ex/\n\
                 COPY --parents src/a/one.txt src/b/*.txt /par/\n\
                 COPY --parents src/./a/one.txt /pivot/\n\
                 COPY --chmod=u=rwx,g=rX,o= src/a /sym/\n\
                 COPY --chmod=640 src/a/one.txt /oct.txt\n",
            ),
            ("src/a/one.txt", "1"),
            ("src/b/two.txt", "2"),
            ("src/b/three.md", "3"),
            ("src/debug.log", "log"),
            ("src/skip/x", "x"),
            ("src/keep/y", "y"),
        ],
    );
    ok(&env.build(&ctx, &["-t", "copyflags:1"]));
    let ls = |args: &str| {
        let o = env.strata(&["run", "--rm", "copyflags:1", "sh", "-c", args]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    assert_eq!(
        ls("cd /ex && find . | sort"),
        ".\n./a\n./a/one.txt\n./b\n./b/three.md\n./b/two.txt\n./keep\n./keep/y\n"
    );
    assert_eq!(
        ls("cd /par && find . | sort"),
        ".\n./src\n./src/a\n./src/a/one.txt\n./src/b\n./src/b/two.txt\n"
    );
    assert_eq!(ls("cd /pivot && find . | sort"), ".\n./a\n./a/one.txt\n");
    // Clauses apply in order, as chmod(1) does: after u=rwx the file is
    // executable by someone, so g=rX gives the group r-x.
    assert_eq!(ls("stat -c %a /sym/one.txt"), "750\n");
    assert_eq!(ls("stat -c %a /oct.txt"), "640\n");
    // An excluded file changing does not invalidate the step.
    std::fs::write(ctx.join("src/debug.log"), "more log").unwrap();
    let again = stderr(&env.build(&ctx, &["-t", "copyflags:1"]));
    assert!(again.contains("#2 CACHED"), "{again}");
    let bad = env.context(
        "badchmod",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nCOPY --chmod=u+q Dockerfile /x\n",
        )],
    );
    let out = env.build(&bad, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--chmod=u+q"), "{}", stderr(&out));
}

#[test]
fn exported_files_get_the_umask_mode_not_a_private_one() {
    use std::os::unix::fs::PermissionsExt;
    let Some(env) = Env::new("exported_files_get_the_umask_mode_not_a_private_one") else {
        return;
    };
    let umask = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Umask:")
                .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        })
        .unwrap();
    let want = 0o666 & !umask;
    let ctx = env.context(
        "modes",
        &[("Dockerfile", "FROM strata-test/busybox:latest\nENV A=1\n")],
    );
    let out = env.dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let docker_tar = out.join("img.tar");
    let oci_dir = out.join("layout");
    let iid = out.join("iid");
    ok(&env.build(
        &ctx,
        &[
            "-o",
            &format!("type=docker,dest={}", docker_tar.display()),
            "-o",
            &format!("type=oci,dest={},tar=false", oci_dir.display()),
            "--iidfile",
            iid.to_str().unwrap(),
        ],
    ));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&docker_tar), want, "{}", docker_tar.display());
    assert_eq!(mode(&iid), want);
    assert_eq!(mode(&oci_dir.join("index.json")), want);
    for e in std::fs::read_dir(oci_dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), want, "{}", p.display());
    }
    let saved = out.join("saved.tar");
    ok(&env.strata(&[
        "save",
        "-o",
        saved.to_str().unwrap(),
        "strata-test/busybox:latest",
    ]));
    assert_eq!(mode(&saved), want);
}

/// Every file of a tree as `path type mode uid gid size/target`, for comparing trees.
fn tree_listing(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let what = if m.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(e.path()).unwrap().display())
        } else if m.is_file() {
            format!("{} bytes", m.len())
        } else {
            "dir".into()
        };
        out.push(format!(
            "{rel} {:o} {}:{} {what}",
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        ));
    }
    out
}

#[test]
fn exports_recompress_layers_as_asked() {
    let t = "exports_recompress_layers_as_asked";
    let Some(env) = Env::new(t) else {
        return;
    };
    let Some(host) = strata_testutil::docker_host(t) else {
        return;
    };
    let ctx = env.context(
        "zstd",
        &[
            ("Dockerfile", "FROM strata-test/busybox:latest\nRUN echo packed > /packed.txt\nCMD [\"cat\", \"/packed.txt\"]\n"),
        ],
    );
    ok(&env.build(&ctx, &["-t", "zstd:1"]));
    let out = env.dir.join("exports");
    std::fs::create_dir_all(&out).unwrap();
    let zstd_tar = out.join("img-zstd.tar");
    let spec = format!(
        "type=oci,dest={},compression=zstd,compression-level=9",
        zstd_tar.display()
    );
    ok(&env.build(&ctx, &["-o", &spec]));
    // Every layer is zstd now, and skopeo reads the archive.
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}", zstd_tar.display()),
        ])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert!(!layers.is_empty());
    for l in layers {
        assert_eq!(
            l["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
    }
    // The config (and so its diff_ids) is the stored image's, unchanged.
    let inspect = env.strata(&["inspect", "zstd:1"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(manifest["config"]["digest"], v[0]["Id"], "{manifest}");
    // The re-encoded blobs are kept in the store for the next export.
    for l in layers {
        let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:");
        assert!(
            env.root.join("blobs/sha256").join(hex).is_file(),
            "re-encoded layer {hex} is not cached in the store"
        );
    }
    let copy_dir = out.join("skopeo-copy");
    let copied = Command::new("skopeo")
        .args([
            "copy",
            &format!("oci-archive:{}", zstd_tar.display()),
            &format!("oci:{}:x", copy_dir.display()),
        ])
        .output()
        .unwrap();
    assert!(copied.status.success(), "{}", stderr(&copied));
    // The tree inside equals -o type=local. Debian's umoci cannot read zstd
    // layers, so skopeo (which can) re-encodes our zstd export as gzip first:
    // that also shows skopeo decoding every zstd layer we wrote.
    let local = out.join("local");
    ok(&env.build(
        &ctx,
        &["-o", &format!("type=local,dest={}", local.display())],
    ));
    let gz_layout = out.join("gz-layout");
    let converted = Command::new("skopeo")
        .args([
            "copy",
            "--dest-compress",
            "--dest-compress-format",
            "gzip",
            &format!("oci-archive:{}", zstd_tar.display()),
            &format!("oci:{}:x", gz_layout.display()),
        ])
        .output()
        .unwrap();
    assert!(converted.status.success(), "{}", stderr(&converted));
    let bundle = out.join("bundle");
    let unpack = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:x", gz_layout.display()),
            bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", stderr(&unpack));
    assert_eq!(tree_listing(&bundle.join("rootfs")), tree_listing(&local));
    // umoci reads uncompressed layers itself: our re-encoding, unconverted.
    let plain_layout = out.join("plain-layout");
    ok(&env.build(
        &ctx,
        &[
            "-t",
            "zstd:1",
            "-o",
            &format!(
                "type=oci,dest={},tar=false,compression=uncompressed",
                plain_layout.display()
            ),
        ],
    ));
    let plain_bundle = out.join("plain-bundle");
    let unpack = Command::new("umoci")
        .args([
            "unpack",
            "--image",
            &format!("{}:1", plain_layout.display()),
            plain_bundle.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", stderr(&unpack));
    assert_eq!(
        tree_listing(&plain_bundle.join("rootfs")),
        tree_listing(&local)
    );
    // The same export twice gives the same bytes.
    let again = out.join("img-zstd-2.tar");
    ok(&env.build(
        &ctx,
        &[
            "-o",
            &format!(
                "type=oci,dest={},compression=zstd,compression-level=9",
                again.display()
            ),
        ],
    ));
    assert_eq!(
        std::fs::read(&zstd_tar).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // Uncompressed docker-archive: docker load takes it and the image runs.
    let plain = out.join("img-plain.tar");
    ok(&env.build(
        &ctx,
        &[
            "-t",
            "strata-e2e/plain:1",
            "-o",
            &format!(
                "type=docker,dest={},compression=uncompressed",
                plain.display()
            ),
        ],
    ));
    let docker = |args: &[&str]| {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", &host)
            .output()
            .unwrap()
    };
    let load = docker(&["load", "-i", plain.to_str().unwrap()]);
    assert!(load.status.success(), "{}", stderr(&load));
    let run = docker(&["run", "--rm", "--network", "none", "strata-e2e/plain:1"]);
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "packed\n",
        "{}",
        stderr(&run)
    );
    let _ = docker(&["rmi", "strata-e2e/plain:1"]);
    // Bad values are refused before anything runs, saying what is wrong.
    for (bad, says) in [
        (
            "type=oci,dest=x.tar,compression=lz4",
            "unknown compression \"lz4\": expected gzip, zstd or uncompressed",
        ),
        (
            "type=oci,dest=x.tar,compression=gzip,compression-level=12",
            "compression-level 12 is out of range for gzip (0-9)",
        ),
        (
            "type=oci,dest=x.tar,compression=zstd,compression-level=fast",
            "compression-level=fast is not a number",
        ),
        (
            "type=oci,dest=x.tar,compression=zstd,force-compression=yes",
            "force-compression=yes: expected true or false",
        ),
        (
            "type=docker,dest=x.tar,compression=zstd",
            "type=docker cannot carry zstd layers",
        ),
    ] {
        let o = env.build(&ctx, &["-o", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{bad}: {}", stderr(&o));
        assert!(!env.dir.join("x.tar").exists());
    }
}

#[test]
fn platform_args_are_predefined_and_proxy_args_pass_through_unrecorded() {
    let Some(env) = Env::new("platform_args_are_predefined_and_proxy_args_pass_through_unrecorded")
    else {
        return;
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let ctx = env.context(
        "platform",
        &[(
            "Dockerfile",
            "ARG TAG=latest\n\
             FROM --platform=$BUILDPLATFORM strata-test/busybox:$TAG\n\
             RUN echo \"undeclared=[$TARGETARCH]\" > /a\n\
             ARG TARGETARCH\n\
             ARG BUILDPLATFORM\n\
             RUN echo \"declared=$TARGETARCH $BUILDPLATFORM\" > /b; env | grep -i _proxy | sort > /proxy; true\n",
        )],
    );
    let proxy = "HTTP_PROXY=http://proxy.invalid:3128";
    ok(&env.build(&ctx, &["-t", "plat:1", "--build-arg", proxy]));
    let cat = |f: &str| {
        let o = env.strata(&["run", "--rm", "plat:1", "cat", f]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // Not visible in a stage until it declares them.
    assert_eq!(cat("/a"), "undeclared=[]\n");
    assert_eq!(cat("/b"), format!("declared={arch} linux/{arch}\n"));
    // The proxy reached RUN without an ARG line, in both spellings as
    // BuildKit's executor sets it (`proxyEnvList`)...
    assert_eq!(
        cat("/proxy"),
        "HTTP_PROXY=http://proxy.invalid:3128\nhttp_proxy=http://proxy.invalid:3128\n"
    );
    // ...is not in the image's history or config...
    let hist = env.strata(&["history", "--no-trunc", "plat:1"]);
    assert!(!String::from_utf8_lossy(&hist.stdout).contains("proxy.invalid"));
    let inspect = env.strata(&["inspect", "plat:1"]);
    assert!(!String::from_utf8_lossy(&inspect.stdout).contains("proxy.invalid"));
    // ...and not in the cache key: another proxy, same build.
    let again = stderr(&env.build(
        &ctx,
        &[
            "-t",
            "plat:1",
            "--build-arg",
            "HTTP_PROXY=http://other.invalid:8080",
        ],
    ));
    assert!(again.contains("steps run: 0"), "{again}");
}

#[test]
fn rootless_builds_record_the_owners_the_image_sees() {
    let t = "rootless_builds_record_the_owners_the_image_sees";
    if !strata_testutil::require_root(t) {
        return;
    }
    let (Some(user), Some(bb)) = (
        strata_testutil::test_user(t),
        strata_testutil::busybox_tar(t),
    ) else {
        return;
    };
    // A work dir the unprivileged user owns.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rootless");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&bb, dir.join("busybox.tar")).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM bb:1\nRUN mkdir /data && echo x > /data/root-owned && touch /data/f && chown 1234:2345 /data/f\n",
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", &user, dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = format!(
        "set -e; export STRATA_ROOT={d}/store; cd {d}; {s} import busybox.tar bb:1 >/dev/null; \
         {s} build -q -t rl:1 . >/dev/null; {s} save -o {d}/img.tar rl:1",
        d = dir.display(),
        s = strata().display()
    );
    let o = Command::new("su")
        .args([&user, "-s", "/bin/sh", "-c", &script])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The build's own layer, read straight from the saved archive.
    let mut ar = tar::Archive::new(std::fs::File::open(dir.join("img.tar")).unwrap());
    let mut layers: Vec<Vec<u8>> = Vec::new();
    let mut manifest = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if path == "manifest.json" {
            manifest = data;
        } else {
            layers.push(data);
        }
    }
    assert!(!manifest.is_empty());
    let mut owners = std::collections::BTreeMap::new();
    for data in layers {
        let gz = flate2::read::GzDecoder::new(&data[..]);
        let mut inner = tar::Archive::new(gz);
        let Ok(entries) = inner.entries() else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path().unwrap().display().to_string();
            if p.starts_with("data") {
                owners.insert(p, (e.header().uid().unwrap(), e.header().gid().unwrap()));
            }
        }
    }
    // Root in the step is root in the image, not the user who ran strata;
    // chown'd files keep the IDs given, not host sub-IDs.
    assert_eq!(owners.get("data/root-owned"), Some(&(0, 0)), "{owners:?}");
    assert_eq!(owners.get("data/f"), Some(&(1234, 2345)), "{owners:?}");
}

#[test]
fn copy_link_layers_do_not_depend_on_the_parent() {
    let Some(env) = Env::new("copy_link_layers_do_not_depend_on_the_parent") else {
        return;
    };
    let files = |df: &'static str| -> Vec<(&'static str, &'static str)> {
        vec![("Dockerfile", df), ("app/conf.txt", "linked\n")]
    };
    let a = env.context(
        "link-a",
        &files("FROM strata-test/busybox:latest\nCOPY --link app /opt/app\n"),
    );
    let b = env.context(
        "link-b",
        &files(
            "FROM strata-test/busybox:latest\nRUN mkdir -p /opt && chmod 700 /opt && echo x > /base-differs\nCOPY --link app /opt/app\n",
        ),
    );
    ok(&env.build(&a, &["-t", "link:a"]));
    ok(&env.build(&b, &["-t", "link:b"]));
    let top = |name: &str| {
        let o = env.strata(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    // Same layer whatever is under it: it can be reused on any base.
    assert_eq!(top("link:a"), top("link:b"));
    // And in the image the file is where it should be.
    let o = env.strata(&["run", "--rm", "link:b", "cat", "/opt/app/conf.txt"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "linked\n");
}

#[test]
fn a_step_sees_the_previous_steps_deletions_and_replacements() {
    let Some(env) = Env::new("a_step_sees_the_previous_steps_deletions_and_replacements") else {
        return;
    };
    // The first RUN's upperdir becomes its layer's snapshot: its whiteout
    // and opaque directory must read the same as the layer they were written to.
    let df = "FROM strata-test/busybox:latest\n\
              RUN rm /bin/vi && rm -rf /home && mkdir /home && echo new > /home/n && mkdir -p /srv/keep && echo k > /srv/keep/f\n\
              RUN test ! -e /bin/vi && test ! -e /home/alice && cat /home/n /srv/keep/f > /seen\n";
    let ctx = env.context("snapshots", &[("Dockerfile", df)]);
    ok(&env.build(&ctx, &["-t", "snap:1"]));
    let o = env.strata(&["run", "--rm", "snap:1", "cat", "/seen"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "new\nk\n");
    // The same from a store whose snapshots were unpacked from the layers
    // (a fresh store loading the saved image, then building on it).
    let saved = env.dir.join("snap.tar");
    ok(&env.strata(&["save", "-o", saved.to_str().unwrap(), "snap:1"]));
    let other = Env::new("a_step_sees_the_previous_steps_deletions_and_replacements").unwrap();
    ok(&other.strata(&["load", "-i", saved.to_str().unwrap()]));
    let ctx2 = other.context(
        "on-loaded",
        &[(
            "Dockerfile",
            "FROM snap:1\nRUN test ! -e /bin/vi && test ! -e /home/alice && cat /seen\n",
        )],
    );
    let out = other.build(&ctx2, &[]);
    let err = ok(&out);
    assert!(err.contains("new\n") || err.contains("#2 new"), "{err}");
}

/// The host's architecture as BuildKit names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[test]
fn platform_and_proxy_args_reach_run_but_not_the_image() {
    let Some(env) = Env::new("platform_and_proxy_args_reach_run_but_not_the_image") else {
        return;
    };
    // Platform ARGs: usable in FROM unannounced, inside a stage only after
    // `ARG NAME`. Proxy build args: seen by RUN with no ARG, in both cases.
    let ctx = env.context(
        "platform-proxy",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest AS linux\n\
             FROM ${TARGETOS}\n\
             ARG TARGETARCH\n\
             ARG TARGETPLATFORM\n\
             RUN echo \"$TARGETARCH $TARGETPLATFORM [${BUILDARCH:-undeclared}] [$http_proxy] [$HTTP_PROXY] [$no_proxy]\" > /out.txt\n",
        )],
    );
    let proxy = "http://proxy.invalid:3128";
    ok(&env.build(
        &ctx,
        &[
            "-t",
            "plat:1",
            "--build-arg",
            &format!("http_proxy={proxy}"),
            "--build-arg",
            "NO_PROXY=localhost",
        ],
    ));
    let run = env.strata(&["run", "--rm", "plat:1", "cat", "/out.txt"]);
    let arch = host_arch();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!("{arch} linux/{arch} [undeclared] [{proxy}] [{proxy}] [localhost]\n")
    );
    // Neither the history nor the image's ENV carries the proxies; the RUN
    // history lists the declared ARGs as BuildKit writes them.
    let hist = env.strata(&["history", "--no-trunc", "plat:1"]);
    let hist = String::from_utf8_lossy(&hist.stdout);
    assert!(!hist.contains("proxy.invalid"), "{hist}");
    assert!(
        hist.contains(&format!(
            "RUN |2 TARGETARCH={arch} TARGETPLATFORM=linux/{arch} /bin/sh -c echo"
        )),
        "{hist}"
    );
    assert!(hist.contains(&format!("ARG TARGETARCH={arch}")), "{hist}");
    let cfg = env.strata(&["inspect", "plat:1"]);
    let v: serde_json::Value = serde_json::from_slice(&cfg.stdout).unwrap();
    let env_list = v[0]["Config"]["Env"].to_string();
    assert!(!env_list.to_lowercase().contains("proxy"), "{env_list}");
    // Proxies are not in the cache key: another proxy reuses the step.
    let log = ok(&env.build(
        &ctx,
        &["--build-arg", "http_proxy=http://elsewhere.invalid:1"],
    ));
    assert!(log.contains("steps run: 0"), "{log}");
}

#[test]
fn print_shows_the_plan_without_building() {
    let Some(env) = Env::new("print_shows_the_plan_without_building") else {
        return;
    };
    let ctx = env.context(
        "print",
        &[(
            "Dockerfile",
            "ARG V=1\n\
             FROM strata-test/busybox:latest AS build\n\
             ARG V\n\
             ENV DIR=/opt/v$V\n\
             WORKDIR $DIR\n\
             RUN echo $V > f && false\n\
             FROM build AS test\n\
             RUN false\n\
             FROM scratch AS tools\n\
             FROM scratch\n\
             COPY --from=build /opt/v${V} /app\n\
             COPY --from=tools / /t\n",
        )],
    );
    let out = env.strata(&[
        "build",
        "--print",
        "--build-arg",
        "V=7",
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "target stage stage-3 (#3), 3 of 4 stages needed",
        "  V=7\n",
        "  #1 test: FROM stage build [pruned by --target]",
        "  level 0: build, tools\n  level 1: stage-3\n",
        "pruned by --target: test\n",
        "     3  ARG V=7\n",
        "     4  ENV DIR=/opt/v7\n",
        "     5  WORKDIR /opt/v7\n",
        "     6  RUN echo $V > f && false\n",
        "    11  COPY --from=build /opt/v /app\n",
    ] {
        assert!(plan.contains(want), "{want:?} not in:\n{plan}");
    }
    // Nothing ran (the RUN would fail), and the output is deterministic.
    let again = env.strata(&[
        "build",
        "--print",
        "--build-arg",
        "V=7",
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(plan, String::from_utf8_lossy(&again.stdout));
    // Semantic errors are reported the same way without building.
    let bad = env.context(
        "print-bad",
        &[(
            "Dockerfile",
            "FROM scratch AS a\nCOPY --from=b / /\nFROM scratch AS b\nCOPY --from=a / /\n",
        )],
    );
    let out = env.strata(&["build", "--print", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("Dockerfile:4:1: circular dependency detected on stage: a"),
        "{err}"
    );
}

#[test]
fn contexts_from_git_and_http_urls() {
    let Some(env) = Env::new("contexts_from_git_and_http_urls") else {
        return;
    };
    // A git repository with the context in a subdirectory, on a branch.
    let repo = env.dir.join("repo");
    std::fs::create_dir_all(repo.join("app")).unwrap();
    std::fs::write(
        repo.join("app/Dockerfile"),
        "FROM strata-test/busybox:latest\nCOPY msg.txt /msg.txt\n",
    )
    .unwrap();
    std::fs::write(repo.join("app/msg.txt"), "from git\n").unwrap();
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
            .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
            .output()
            .unwrap();
        assert!(o.status.success(), "git {args:?}: {}", stderr(&o));
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "add", "."]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "c",
    ]);
    git(&["branch", "release"]);
    let bare = env.dir.join("repo.git");
    let o = Command::new("git")
        .args([
            "clone",
            "-q",
            "--bare",
            repo.to_str().unwrap(),
            bare.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let url = format!("file://{}#release:app", bare.display());
    let err = ok(&env.strata(&["build", "--progress", "plain", "-t", "fromgit:1", &url]));
    // The clone is a git work tree: the epoch is its commit time.
    assert!(err.contains("epoch: 1704164645"), "{err}");
    let o = env.strata(&["run", "--rm", "fromgit:1", "cat", "/msg.txt"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from git\n");
    // An http URL of a gzipped tar archive is the context...
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in [
        (
            "Dockerfile",
            "FROM strata-test/busybox:latest\nCOPY in-tar.txt /\n",
        ),
        ("in-tar.txt", "from a tarball\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
    let addr = strata_testutil::serve_forever(gz.finish().unwrap());
    ok(&env.strata(&[
        "build",
        "-q",
        "-t",
        "fromtar:1",
        &format!("http://{addr}/ctx.tar.gz"),
    ]));
    let o = env.strata(&["run", "--rm", "fromtar:1", "cat", "/in-tar.txt"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from a tarball\n");
    // ...and one of a plain Dockerfile builds with an empty context.
    let addr = strata_testutil::serve_forever(
        b"FROM strata-test/busybox:latest\nRUN echo plain > /p\n".to_vec(),
    );
    ok(&env.strata(&[
        "build",
        "-q",
        "-t",
        "fromdf:1",
        &format!("http://{addr}/Dockerfile"),
    ]));
    // A missing ref is a clear error.
    let bad = env.strata(&["build", &format!("file://{}#nope", bare.display())]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(stderr(&bad).contains("nope"), "{}", stderr(&bad));
}

#[test]
fn import_honours_source_date_epoch() {
    let Some(a) = Env::new("import_honours_source_date_epoch") else {
        return;
    };
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = Env::new("import_honours_source_date_epoch").unwrap();
    let id = |e: &Env| {
        let o = e.strata(&[
            "inspect",
            "--format",
            "{{.Id}}",
            "strata-test/busybox:latest",
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    // Imported a second apart, with the same SOURCE_DATE_EPOCH.
    assert!(!id(&a).is_empty());
    assert_eq!(id(&a), id(&b));
}

/// The blob `digest` (`sha256:...`) of an OCI layout folder, as JSON.
fn layout_json(layout: &Path, digest: &serde_json::Value) -> serde_json::Value {
    let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The content of `name` in a gzip layer blob of an OCI layout folder.
fn layer_file(layout: &Path, digest: &serde_json::Value, name: &str) -> Option<String> {
    use std::io::Read;
    let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
    let f = std::fs::File::open(layout.join("blobs/sha256").join(hex)).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            return Some(s);
        }
    }
    None
}

#[test]
fn multi_platform_build_writes_an_index_with_a_manifest_per_platform() {
    let t = "multi_platform_build_writes_an_index_with_a_manifest_per_platform";
    let Some(env) = Env::new(t) else {
        return;
    };
    let ctx = env.context(
        "multi",
        &[
            (
                "Dockerfile",
                "FROM scratch\nARG TARGETARCH\nCOPY common.txt /common.txt\nCOPY $TARGETARCH.txt /arch.txt\nENV ARCH=$TARGETARCH\n",
            ),
            ("common.txt", "shared\n"),
            ("amd64.txt", "amd64\n"),
            ("arm64.txt", "arm64\n"),
        ],
    );
    let out = env.dir.join("multi-out");
    std::fs::create_dir_all(&out).unwrap();
    let archive = out.join("x.tar");
    let local = out.join("rootfs");
    ok(&env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi:1",
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    ));
    // skopeo sees an index with one manifest per platform.
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}", archive.display()),
        ])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    let index: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    // buildx's default provenance (mode=min, inline-only) rides along in
    // an index BuildKit makes anyway: an attestation manifest per platform,
    // after the images.
    assert_eq!(
        platforms,
        [
            "linux/amd64",
            "linux/arm64",
            "unknown/unknown",
            "unknown/unknown"
        ],
        "{index}"
    );
    for i in 0..2 {
        assert_eq!(
            index["manifests"][i + 2]["annotations"]["vnd.docker.reference.digest"],
            index["manifests"][i]["digest"],
            "{index}"
        );
    }
    // skopeo copies every platform, and each image is for its platform with
    // its own TARGETARCH.
    let copied = out.join("copied");
    let copy = Command::new("skopeo")
        .args([
            "copy",
            "--all",
            &format!("oci-archive:{}", archive.display()),
            &format!("oci:{}:multi", copied.display()),
        ])
        .output()
        .unwrap();
    assert!(copy.status.success(), "{}", stderr(&copy));
    let top: serde_json::Value =
        serde_json::from_slice(&std::fs::read(copied.join("index.json")).unwrap()).unwrap();
    let nested = layout_json(&copied, &top["manifests"][0]["digest"]);
    let mut layer_digests = Vec::new();
    for (m, arch) in nested["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["amd64", "arm64"])
    {
        let manifest = layout_json(&copied, &m["digest"]);
        let config = layout_json(&copied, &manifest["config"]["digest"]);
        assert_eq!(config["architecture"], arch, "{config}");
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["config"]["Env"][1],
            format!("ARCH={arch}"),
            "{config}"
        );
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(
            layer_file(&copied, &layers[1]["digest"], "arch.txt").as_deref(),
            Some(format!("{arch}\n").as_str())
        );
        layer_digests.push(layers[0]["digest"].clone());
    }
    // The COPY of the same file makes the same layer on both platforms.
    assert_eq!(layer_digests[0], layer_digests[1]);
    // type=local: one folder per platform, as buildx writes it.
    for arch in ["amd64", "arm64"] {
        let p = local.join(format!("linux_{arch}/arch.txt"));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{arch}\n"));
    }
    // The same as an OCI layout folder (named the same: the provenance's
    // subjects are the image's names).
    let layout = out.join("layout");
    ok(&env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi:1",
            "-o",
            &format!("type=oci,dest={},tar=false", layout.display()),
        ],
    ));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &format!("oci:{}", layout.display())])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    let from_dir: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(from_dir, index);
    // Built again (all cached): the same bytes.
    let again = out.join("again.tar");
    ok(&env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "multi:1",
            "-o",
            &format!("type=oci,dest={}", again.display()),
        ],
    ));
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // A docker-archive cannot hold several platforms: refused up front
    // (tests/platforms.rs has type=tar's folder per platform).
    let o = env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            "type=docker,dest=d.tar",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not currently support exporting manifest lists"),
        "{}",
        stderr(&o)
    );
    let o = env.build(&ctx, &["--platform", "linux/amd64,linux/amd64"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("given twice"), "{}", stderr(&o));
}

#[test]
fn run_for_a_foreign_platform_without_an_emulator_says_so() {
    let t = "run_for_a_foreign_platform_without_an_emulator_says_so";
    let Some(env) = Env::new(t) else {
        return;
    };
    let (foreign, qemu) = match std::env::consts::ARCH {
        "aarch64" => ("amd64", "x86_64"),
        _ => ("arm64", "aarch64"),
    };
    // A base stored for the host is not silently used for another platform.
    let ctx = env.context(
        "foreign-base",
        &[("Dockerfile", "FROM strata-test/busybox:latest\nENV A=1\n")],
    );
    let o = env.build(&ctx, &["--platform", &format!("linux/{foreign}")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("not linux/{foreign}")),
        "{}",
        stderr(&o)
    );
    let handler = Path::new("/proc/sys/fs/binfmt_misc").join(format!("qemu-{qemu}"));
    if handler.exists() {
        // Not a skip: this machine can run the step, which is what the
        // check is for; its messages are unit-tested on a fake binfmt_misc.
        #[expect(clippy::print_stderr, reason = "says why part of the test did not run")]
        {
            eprintln!(
                "{t}: an emulator is registered ({}), so the RUN would run; not checking its error",
                handler.display()
            );
        }
        return;
    }
    let ctx = env.context(
        "foreign",
        &[
            (
                "Dockerfile",
                "FROM scratch\nCOPY a.txt /a.txt\nRUN echo hi\n",
            ),
            ("a.txt", "a\n"),
        ],
    );
    let o = env.build(&ctx, &["--platform", &format!("linux/{foreign}")]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(&format!("RUN for linux/{foreign}")), "{err}");
    assert!(err.contains("binfmt_misc"), "{err}");
    assert!(err.contains("Dockerfile:3"), "{err}");
}

#[test]
fn multi_platform_build_runs_build_platform_stages_natively() {
    // The cross-compiling pattern: RUN on the build platform with the
    // target's TARGETARCH, the result copied into a per-platform image.
    let t = "multi_platform_build_runs_build_platform_stages_natively";
    let Some(env) = Env::new(t) else {
        return;
    };
    let ctx = env.context(
        "cross",
        &[(
            "Dockerfile",
            "FROM --platform=$BUILDPLATFORM strata-test/busybox:latest AS build\n\
             ARG TARGETARCH\n\
             RUN echo \"built for $TARGETARCH on $(uname -m)\" > /out.txt\n\
             FROM scratch\n\
             COPY --from=build /out.txt /out.txt\n",
        )],
    );
    let local = env.dir.join("cross-out");
    let log = ok(&env.build(
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "-o",
            &format!("type=local,dest={}", local.display()),
        ],
    ));
    let machine = std::env::consts::ARCH;
    for arch in ["amd64", "arm64"] {
        let got = std::fs::read_to_string(local.join(format!("linux_{arch}/out.txt"))).unwrap();
        assert_eq!(got, format!("built for {arch} on {machine}\n"), "{log}");
    }
    // Progress names each platform's steps.
    assert!(log.contains("[linux/arm64 build "), "{log}");
}

/// Allocated bytes of every file named `name` under `dir` (recursively).
fn allocated(dir: &Path, name: &str) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        if m.is_dir() {
            out.extend(allocated(&e.path(), name));
        } else if e.file_name() == name {
            out.push((m.len(), m.blocks() * 512));
        }
    }
    out
}

/// A sparse file in the context (issue #14): a 256 MiB file with two bytes
/// of data stays a few blocks in the COPY step's snapshot, and a RUN step
/// reads it back whole. (Unpacking a layer keeps holes too: the unit tests
/// of `strata_oci::sparse`, which the extractor uses.)
#[test]
fn sparse_files_stay_sparse_in_snapshots() {
    let Some(env) = Env::new("sparse_files_stay_sparse_in_snapshots") else {
        return;
    };
    let ctx = env.context(
        "sparse",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nCOPY big.img /big.img\n\
             RUN test \"$(wc -c < /big.img)\" = 268435456 && tail -c 1 /big.img | od -An -c > /tail\n",
        )],
    );
    let f = std::fs::File::create(ctx.join("big.img")).unwrap();
    f.set_len(1 << 28).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"a", 4096 * 100).unwrap();
    f.write_all_at(b"z", (1 << 28) - 1).unwrap();
    drop(f);
    ok(&env.build(&ctx, &["-t", "sparse:1"]));
    let found = allocated(&env.root.join("snapshots"), "big.img");
    assert!(!found.is_empty(), "no snapshot holds big.img");
    for (len, alloc) in found {
        assert_eq!(len, 1 << 28);
        assert!(
            alloc < 1 << 20,
            "a snapshot's big.img has {alloc} bytes allocated"
        );
    }
    let tail = allocated(&env.root.join("snapshots"), "tail");
    assert!(!tail.is_empty(), "the RUN step saw the file");
}

/// `RUN --security=insecure` is refused naming its line (strata has no
/// privileged mode; BuildKit too refuses it without the entitlement), and
/// `--allow` takes buildx's entitlement names: `network.host` is granted,
/// the others are refused with the reason.
#[test]
fn security_insecure_and_entitlements_are_refused_with_reasons() {
    let Some(env) = Env::new("security_insecure_and_entitlements_are_refused_with_reasons") else {
        return;
    };
    let ctx = env.context(
        "insecure",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN --security=insecure true\n",
        )],
    );
    let o = env.build(&ctx, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("Dockerfile:2") && err.contains("no privileged mode"),
        "{err}"
    );

    let o = env.build(&ctx, &["--allow", "security.insecure"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no privileged mode"));
    let o = env.build(&ctx, &["--allow", "network.hots"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown entitlement"), "{}", stderr(&o));

    let ok_ctx = env.context(
        "sandbox",
        &[(
            "Dockerfile",
            "FROM strata-test/busybox:latest\nRUN --security=sandbox true\n",
        )],
    );
    ok(&env.build(
        &ok_ctx,
        &[
            "--allow",
            "network.host",
            "--provenance=false",
            "--sbom=false",
        ],
    ));
    // strata makes SBOMs itself (tests/sbom.rs): a scanner image is
    // refused, not ignored.
    let o = env.build(&ok_ctx, &["--sbom=generator=docker/buildkit-syft-scanner"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("scans the image in process"),
        "{}",
        stderr(&o)
    );
}

/// Rootless COPY, ADD, `--chown`, `--chmod` and WORKDIR (issue #14: they
/// failed "chown …: Operation not permitted") give the same image, to the
/// byte, as the same build run as root.
#[test]
fn rootless_copy_and_workdir_match_the_rootful_image() {
    let t = "rootless_copy_and_workdir_match_the_rootful_image";
    if !strata_testutil::require_root(t) {
        return;
    }
    let (Some(user), Some(bb)) = (
        strata_testutil::test_user(t),
        strata_testutil::busybox_tar(t),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let build = |dir: &Path, as_user: Option<&str>| -> String {
        std::fs::create_dir_all(dir.join("ctx/sub")).unwrap();
        std::fs::copy(&bb, dir.join("busybox.tar")).unwrap();
        std::fs::write(dir.join("ctx/file"), "hello\n").unwrap();
        std::fs::write(dir.join("ctx/sub/inner"), "inner\n").unwrap();
        std::fs::write(
            dir.join("ctx/Dockerfile"),
            "FROM bb:1\nCOPY file /file\nCOPY --chown=1000:100 sub /app/sub/\n\
             ADD --chmod=4755 file /suid\nWORKDIR /made/here\nUSER 1000\nWORKDIR /home/u/w\n\
             USER root\nRUN ls -lnR /app /made /home/u /suid /file > /owners\n",
        )
        .unwrap();
        let script = format!(
            "set -e; export STRATA_ROOT={d}/store SOURCE_DATE_EPOCH=1600000000; cd {d}; \
             {s} import busybox.tar bb:1 >/dev/null; {s} build -q -t rl:1 ctx",
            d = dir.display(),
            s = strata().display()
        );
        let o = match as_user {
            Some(u) => {
                let chown = Command::new("chown")
                    .args(["-R", u, dir.to_str().unwrap()])
                    .status()
                    .unwrap();
                assert!(chown.success());
                Command::new("su")
                    .args([u, "-s", "/bin/sh", "-c", &script])
                    .output()
                    .unwrap()
            }
            None => Command::new("sh").args(["-c", &script]).output().unwrap(),
        };
        assert!(o.status.success(), "{as_user:?}: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    };
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let rootful = build(&tmp.path().join("rootful"), None);
    let rootless = build(&tmp.path().join("rootless"), Some(&user));
    assert!(rootful.starts_with("sha256:"), "{rootful}");
    assert_eq!(rootless, rootful, "the rootless build made another image");
}
