//! `--isolation` (issue 15): a build with `chroot` (what an unprivileged
//! container allows) gives the image a build with `namespaces` gives; what a
//! chroot cannot provide is refused with a message naming it; `none` is
//! refused. The same inside a real unprivileged container is in dist.rs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A store of its own with the busybox fixture imported at a fixed date, so
/// that two stores start from the same base image ID.
struct Store {
    root: PathBuf,
}

impl Store {
    fn new(test: &str, dir: &Path, name: &str) -> Option<Self> {
        let tar = strata_testutil::busybox_tar(test)?;
        let store = Store {
            root: dir.join(name),
        };
        let o = store.strata(&[
            "import",
            tar.to_str().expect("utf-8 path"),
            "strata-test/busybox:latest",
        ]);
        assert!(o.status.success(), "import: {}", text(&o.stderr));
        Some(store)
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(strata())
            .args(args)
            .env("STRATA_ROOT", &self.root)
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .output()
            .expect("spawn strata")
    }

    fn build(&self, ctx: &Path, isolation: &str) -> Output {
        self.strata(&[
            "build",
            "--progress",
            "plain",
            "--isolation",
            isolation,
            "--iidfile",
            self.root.join("iid").to_str().expect("utf-8 path"),
            ctx.to_str().expect("utf-8 path"),
        ])
    }

    fn image_id(&self) -> String {
        std::fs::read_to_string(self.root.join("iid")).expect("iidfile")
    }
}

fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).expect("mkdir ctx");
    std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
    std::fs::write(ctx.join("data.txt"), "from the context\n").expect("write data");
    ctx
}

/// RUN steps that create, modify and delete files, directories, links and
/// owners, in the exported stage (a stage before it is joined by COPY
/// --from); writes to the runtime's own files (/etc/hosts, /dev) that must
/// stay out of the layers; a directory removed and made again; a hard link
/// made in one step and one of its names rewritten in the next (overlayfs's
/// copy-up breaks the link: the other name keeps the old content).
const DOCKERFILE: &str = r#"FROM strata-test/busybox:latest AS tool
RUN echo built > /tool && chmod 700 /tool

FROM strata-test/busybox:latest
WORKDIR /src
COPY data.txt .
COPY --from=tool /tool /usr/local/bin/tool
RUN mkdir -p /app/sub /app/empty && echo one > /app/a && echo two > /app/sub/b \
 && ln -s a /app/link && ln /app/a /app/hard && chmod 600 /app/sub/b \
 && chown 1:2 /app/sub && mkfifo /app/fifo && cp data.txt /app/ \
 && echo 10.9.9.9 added >> /etc/hosts && echo x > /dev/null && rm -rf /root
RUN echo changed > /app/a && rm /app/sub/b && rm -rf /app/empty && mkdir /app/empty \
 && touch /app/empty/new && chmod 711 /app && rm /bin/vi && echo more >> /etc/passwd \
 && grep -q buildkitsandbox /etc/hosts && test -c /dev/null && test -d /dev/shm
USER nobody
RUN echo "$(id -u)" > /tmp/uid
USER root
RUN cat /app/a /app/hard /tmp/uid > /summary && rm -f /app/fifo && ln -s /summary /s
"#;

#[test]
fn chroot_builds_the_image_namespaces_build() {
    const T: &str = "chroot_builds_the_image_namespaces_build";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = context(tmp.path(), DOCKERFILE);
    let Some(ns) = Store::new(T, tmp.path(), "namespaces") else {
        return;
    };
    let Some(ch) = Store::new(T, tmp.path(), "chroot") else {
        return;
    };
    let a = ns.build(&ctx, "namespaces");
    assert!(a.status.success(), "namespaces build: {}", text(&a.stderr));
    let b = ch.build(&ctx, "chroot");
    assert!(b.status.success(), "chroot build: {}", text(&b.stderr));
    assert_eq!(
        ns.image_id(),
        ch.image_id(),
        "the same Dockerfile gave two images:\nnamespaces: {}\nchroot: {}",
        text(&a.stderr),
        text(&b.stderr)
    );
    // The image's content, as built in the chroot.
    let out = ch.strata(&[
        "run",
        "--rm",
        "--network",
        "none",
        &ch.image_id(),
        "cat",
        "/summary",
    ]);
    assert_eq!(
        text(&out.stdout),
        "changed\none\n65534\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn auto_says_which_isolation_it_picked() {
    const T: &str = "auto_says_which_isolation_it_picked";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = context(
        tmp.path(),
        "FROM strata-test/busybox:latest\nRUN echo hi > /hi\n",
    );
    let Some(store) = Store::new(T, tmp.path(), "store") else {
        return;
    };
    let o = store.build(&ctx, "auto");
    assert!(o.status.success(), "{}", text(&o.stderr));
    // On the test machines (root, namespaces allowed), auto picks them.
    let lines: Vec<_> = text(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("isolation: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        vec!["isolation: namespaces (namespaces work here)".to_string()]
    );
}

#[test]
fn chroot_provides_dev_proc_and_hosts() {
    const T: &str = "chroot_provides_dev_proc_and_hosts";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = context(
        tmp.path(),
        "FROM strata-test/busybox:latest\n\
         RUN --mount=type=bind,target=/ctx --mount=type=tmpfs,target=/scratch \
             head -c 16 /dev/urandom | wc -c && grep -q processor /proc/cpuinfo \
             && grep -q MemTotal /proc/meminfo && grep -q . /proc/sys/kernel/osrelease \
             && cat /ctx/data.txt && touch /scratch/x && test -w /dev/shm \
             && grep buildkitsandbox /etc/hosts | cut -f2\n",
    );
    let Some(store) = Store::new(T, tmp.path(), "store") else {
        return;
    };
    let o = store.build(&ctx, "chroot");
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    // (No `$HOSTNAME`: a RUN step gets none, as in BuildKit, and a chroot
    // has no UTS namespace of its own to name.)
    for want in ["16", "from the context", "localhost buildkitsandbox"] {
        assert!(
            err.lines()
                .any(|l| l.split_once(' ').map(|x| x.1) == Some(want)),
            "no step output line {want:?} in:\n{err}"
        );
    }
}

#[test]
fn chroot_refuses_what_needs_mounts_or_namespaces() {
    const T: &str = "chroot_refuses_what_needs_mounts_or_namespaces";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(store) = Store::new(T, tmp.path(), "store") else {
        return;
    };
    for (run, message) in [
        (
            "RUN --mount=type=cache,target=/cache true",
            "RUN --mount type=cache at /cache needs mount(2), which --isolation chroot cannot use",
        ),
        (
            "RUN --network=none true",
            "RUN --network=none needs a network namespace, which --isolation chroot cannot create",
        ),
    ] {
        let dir = tmp.path().join(format!("{}", run.len()));
        let ctx = context(&dir, &format!("FROM strata-test/busybox:latest\n{run}\n"));
        let o = store.build(&ctx, "chroot");
        assert_eq!(o.status.code(), Some(1), "{run}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(message),
            "{run}: {}",
            text(&o.stderr)
        );
    }
}

/// `strata run` takes `build`'s flag, with the same values and messages;
/// a container in chroot mode has the copied `/proc` (no `/proc/self`).
#[test]
fn run_takes_the_isolation_flag_build_takes() {
    const T: &str = "run_takes_the_isolation_flag_build_takes";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(store) = Store::new(T, tmp.path(), "store") else {
        return;
    };
    let script = "echo written > /f && cat /f && grep -q MemTotal /proc/meminfo \
                  && if test -e /proc/self; then echo live-proc; else echo copied-proc; fi";
    for (isolation, proc) in [("chroot", "copied-proc"), ("namespaces", "live-proc")] {
        let o = store.strata(&[
            "run",
            "--rm",
            "--network",
            "host",
            "--isolation",
            isolation,
            "strata-test/busybox:latest",
            "sh",
            "-c",
            script,
        ]);
        assert!(o.status.success(), "{isolation}: {}", text(&o.stderr));
        assert_eq!(text(&o.stdout), format!("written\n{proc}\n"), "{isolation}");
    }
    // Without --rm the chroot container's writable layer is kept, as the
    // namespaces one is.
    let o = store.strata(&[
        "run",
        "--name",
        "chrooted",
        "--isolation",
        "chroot",
        "strata-test/busybox:latest",
        "sh",
        "-c",
        "echo kept > /kept",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let diff = store.strata(&["diff", "chrooted"]);
    assert!(diff.status.success(), "{}", text(&diff.stderr));
    assert_eq!(text(&diff.stdout), "A /kept\n");
}

#[test]
fn isolation_none_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = context(tmp.path(), "FROM scratch\n");
    let ctx = ctx.to_str().expect("utf-8 path");
    for command in [&["build", ctx][..], &["run", "busybox", "true"]] {
        for (mode, message) in [
            (
                "none",
                "--isolation none (running steps in this container's own root",
            ),
            (
                "jail",
                "--isolation jail: expected auto, namespaces, chroot or none",
            ),
        ] {
            let o = Command::new(strata())
                .args(&command[..1])
                .args(["--isolation", mode])
                .args(&command[1..])
                .env("STRATA_ROOT", tmp.path().join("store"))
                .output()
                .expect("spawn strata");
            let err = text(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{command:?} {mode}: {err}");
            assert!(err.contains(message), "{command:?} {mode}: {err}");
        }
    }
}
