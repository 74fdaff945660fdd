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
        self.build_with(ctx, isolation, &[])
    }

    fn build_with(&self, ctx: &Path, isolation: &str, flags: &[&str]) -> Output {
        let iidfile = self.root.join("iid");
        let mut args = vec![
            "build",
            "--progress",
            "plain",
            "--isolation",
            isolation,
            "--iidfile",
            iidfile.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(flags);
        args.push(ctx.to_str().expect("utf-8 path"));
        self.strata(&args)
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

/// Cache, secret and SSH mounts with owners and modes, a secret at a
/// target of its own, a read-only cache: what the steps saw is recorded in
/// the image, and the mounts themselves must stay out of it.
const MOUNTS_DOCKERFILE: &str = r#"FROM strata-test/busybox:latest
RUN --mount=type=cache,id=app,target=/var/cache/app,uid=1,gid=2,mode=0750 \
    echo run >> /var/cache/app/log && wc -l < /var/cache/app/log > /runs \
 && stat -c '%u:%g %a' /var/cache/app > /cache-owner
RUN --mount=type=cache,id=app,target=/var/cache/app,uid=1,gid=2,mode=0750,ro \
    cat /var/cache/app/log > /seen
RUN --mount=type=secret,id=tok,required=true,uid=3,mode=0440 \
    wc -c < /run/secrets/tok > /secret-len && stat -c '%u %a' /run/secrets/tok > /secret-owner
RUN --mount=type=secret,id=tok,target=/etc/app/token,required=true \
    test "$(cat /etc/app/token)" = s3cr3t-value && touch /etc/app-seen
RUN --mount=type=ssh,required=true,uid=1000,gid=3,mode=0640 test -S /run/buildkit/ssh_agent.0 \
 && stat -c 'socket %u:%g %a' /run/buildkit/ssh_agent.0 > /agent
"#;

/// The mounts a chroot provides by copying and forwarding give the image
/// namespaces give; the cache's writes persist to the next build.
#[test]
fn chroot_cache_secret_and_ssh_mounts_give_the_namespaces_image() {
    const T: &str = "chroot_cache_secret_and_ssh_mounts_give_the_namespaces_image";
    if !strata_testutil::require_root(T) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = context(tmp.path(), MOUNTS_DOCKERFILE);
    let secret = tmp.path().join("tok.txt");
    std::fs::write(&secret, "s3cr3t-value").expect("write secret");
    // The steps check the socket's owner and mode, which both executors
    // give their forwarder's socket (busybox has no agent client); that
    // connections reach the agent is the executor's unit test.
    let agent_path = tmp.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&agent_path).expect("bind agent");
    let secret_flag = format!("id=tok,src={}", secret.display());
    let ssh_flag = format!("default={}", agent_path.display());
    let flags = ["--secret", &secret_flag, "--ssh", &ssh_flag];
    let Some(ns) = Store::new(T, tmp.path(), "namespaces") else {
        return;
    };
    let Some(ch) = Store::new(T, tmp.path(), "chroot") else {
        return;
    };
    let a = ns.build_with(&ctx, "namespaces", &flags);
    assert!(a.status.success(), "namespaces build: {}", text(&a.stderr));
    let b = ch.build_with(&ctx, "chroot", &flags);
    assert!(b.status.success(), "chroot build: {}", text(&b.stderr));
    let read = |store: &Store, files: &str| {
        let o = store.strata(&[
            "run",
            "--rm",
            "--network",
            "none",
            &store.image_id(),
            "sh",
            "-c",
            &format!(
                "cat {files}; for p in /run/secrets /run/buildkit /var/cache/app /etc/app; do \
                 test -e $p && echo $p is in the image; done; true"
            ),
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let files = "/runs /cache-owner /seen /secret-len /secret-owner /agent /etc/app-seen";
    // The same in both: the mounts' owners and modes, the SSH socket's
    // included (the namespaces executor once bound the agent's own socket,
    // with the agent's owner and mode).
    for (store, isolation) in [(&ch, "chroot"), (&ns, "namespaces")] {
        assert_eq!(
            read(store, files),
            "1\n1:2 750\nrun\n12\n3 440\nsocket 1000:3 640\n",
            "what the {isolation} steps saw"
        );
    }
    assert_eq!(
        ns.image_id(),
        ch.image_id(),
        "the same Dockerfile gave two images:\nnamespaces: {}\nchroot: {}",
        text(&a.stderr),
        text(&b.stderr)
    );
    // The first step's write reached the cache: a rebuild sees it.
    let again = ch.build_with(&ctx, "chroot", &[&flags[..], &["--no-cache"]].concat());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(read(&ch, "/runs /seen"), "2\nrun\nrun\n");
}

/// What real Dockerfiles' steps run, on a Debian base in a chroot with its
/// copied `/proc`: a C compiler and the program it made, `nproc`, perl and
/// dpkg.
#[test]
fn chroot_runs_a_compiler_and_package_tools_on_debian() {
    const T: &str = "chroot_runs_a_compiler_and_package_tools_on_debian";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(debian) = strata_testutil::debian_tar(T) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store {
        root: tmp.path().join("store"),
    };
    let o = store.strata(&[
        "import",
        debian.to_str().expect("utf-8 path"),
        "strata-test/debian:bookworm",
    ]);
    assert!(o.status.success(), "import: {}", text(&o.stderr));
    let ctx = context(
        tmp.path(),
        "FROM strata-test/debian:bookworm\n\
         RUN printf '#include <stdio.h>\\nint main(void){puts(\"compiled\");return 0;}\\n' \
             > /hello.c && gcc -O2 -o /usr/local/bin/hello /hello.c && hello \
          && test \"$(nproc)\" -ge 1 && perl -e 'print \"perl runs\\n\"' \
          && dpkg -s libc6 | grep -q '^Status: install ok installed' && echo dpkg works\n",
    );
    let o = store.build(&ctx, "chroot");
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    for want in ["compiled", "perl runs", "dpkg works"] {
        assert!(
            err.lines()
                .any(|l| l.split_once(' ').map(|x| x.1) == Some(want)),
            "no step output line {want:?} in:\n{err}"
        );
    }
}

/// A Python wheel and a Node package, as a project's build context holds
/// them: `hello` (a module and its dist-info, zipped into a wheel by the
/// step with Python's own zipfile) and `hello-js` with a build script that
/// uses it, a child node and a worker thread.
fn runtimes_context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = context(dir, dockerfile);
    let files = [
        (
            "wheel/hello/__init__.py",
            "def greet():\n    return 'hello from a wheel'\n",
        ),
        (
            "wheel/hello-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: hello\nVersion: 1.0\n",
        ),
        (
            "wheel/hello-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: strata-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (
            "wheel/hello-1.0.dist-info/RECORD",
            "hello/__init__.py,,\nhello-1.0.dist-info/METADATA,,\nhello-1.0.dist-info/WHEEL,,\n\
             hello-1.0.dist-info/RECORD,,\n",
        ),
        (
            "hello-js/package.json",
            r#"{"name": "hello-js", "version": "1.0.0", "main": "index.js"}"#,
        ),
        (
            "hello-js/index.js",
            "module.exports = () => 'hello from a node package';\n",
        ),
        (
            "build.js",
            r#"const { execFileSync } = require('child_process');
const { Worker } = require('worker_threads');
console.log(require('hello-js')());
const child = execFileSync(process.execPath,
  ['-e', 'process.stdout.write("child " + (require("os").cpus().length > 0))']);
console.log(child.toString());
new Worker('require("worker_threads").parentPort.postMessage(6 * 7)', { eval: true })
  .on('message', (m) => console.log('worker ' + m));
"#,
        ),
    ];
    for (path, content) in files {
        let at = ctx.join(path);
        std::fs::create_dir_all(at.parent().expect("a parent")).expect("mkdir");
        std::fs::write(&at, content).expect("write context file");
    }
    ctx
}

/// Steps of Python and Node projects, offline: a venv with pip (from
/// ensurepip), a local wheel installed with `--no-index`, multiprocessing
/// (POSIX semaphores in /dev/shm, worker processes); node running a build
/// script with a package from `node_modules`, a child node started through
/// `process.execPath` (which node finds through `/proc/self/exe` where
/// there is one) and a worker thread. No `.pyc` files are kept: CPython's
/// are not reproducible (marshal's output depends on reference counts,
/// bpo-34033), so two namespaces builds differ in them, as reproducible
/// Python images find. (npm, from its registry: tests/chroot_packages.rs.)
const RUNTIMES_DOCKERFILE: &str = r#"FROM strata-test/debian:runtimes
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
COPY wheel /src/wheel
RUN python3 -m venv /venv && find /venv -name __pycache__ -prune -exec rm -r {} + \
 && cd /src/wheel && python3 -m zipfile -c /tmp/hello-1.0-py3-none-any.whl hello hello-1.0.dist-info \
 && /venv/bin/pip install --no-compile --no-index /tmp/hello-1.0-py3-none-any.whl \
 && rm /tmp/hello-1.0-py3-none-any.whl \
 && /venv/bin/python -c 'import hello; print(hello.greet())' \
 && /venv/bin/python -c 'import multiprocessing as mp; print("pool", sum(mp.Pool(2).map(abs, [-1, -2])))'
COPY hello-js /app/node_modules/hello-js
COPY build.js /app/
RUN cd /app && node build.js > /app/built.txt && cat /app/built.txt
"#;

/// Python and Node steps build in chroot mode (no `/proc/self`, a copied
/// `/dev/shm`) and give the image namespaces give.
#[test]
fn chroot_runs_python_and_node_steps_like_namespaces() {
    const T: &str = "chroot_runs_python_and_node_steps_like_namespaces";
    if !strata_testutil::require_root(T) {
        return;
    }
    let Some(runtimes) = strata_testutil::env_or_skip(T, "STRATA_TEST_DEBIAN_RUNTIMES_TAR") else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store {
        root: tmp.path().join("store"),
    };
    let o = store.strata(&["import", &runtimes, "strata-test/debian:runtimes"]);
    assert!(o.status.success(), "import: {}", text(&o.stderr));
    let ctx = runtimes_context(tmp.path(), RUNTIMES_DOCKERFILE);
    let mut ids = Vec::new();
    for isolation in ["namespaces", "chroot"] {
        let o = store.build_with(&ctx, isolation, &["--no-cache"]);
        let err = text(&o.stderr);
        assert!(o.status.success(), "{isolation}: {err}");
        for want in [
            "hello from a wheel",
            "pool 3",
            "hello from a node package",
            "child true",
            "worker 42",
        ] {
            assert!(
                err.lines()
                    .any(|l| l.split_once(' ').map(|x| x.1) == Some(want)),
                "{isolation}: no step output line {want:?} in:\n{err}"
            );
        }
        ids.push(store.image_id());
    }
    assert_eq!(ids[0], ids[1], "namespaces and chroot gave two images");
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
    // One line, which also says how devices are kept from steps (a cgroup
    // with a device filter, or the fallback where none can be made).
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("isolation: namespaces (namespaces work here; devices: ")
            && lines[0].ends_with(')'),
        "{lines:?}"
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
    let secret = tmp.path().join("tok.txt");
    std::fs::write(&secret, "s3cr3t-value").expect("write secret");
    let secret_flag = format!("id=tok,src={}", secret.display());
    for (run, message) in [
        (
            "RUN --network=none true",
            "RUN --network=none needs a network namespace, which --isolation chroot cannot create",
        ),
        // A bind-mounted secret cannot be renamed away; a copied one can,
        // and would stay in the layer.
        (
            "RUN --mount=type=secret,id=tok mv /run/secrets/tok /leaked",
            "RUN --mount=type=secret at /run/secrets/tok: the step moved, removed or hard-linked \
             the secret's file",
        ),
    ] {
        let dir = tmp.path().join(format!("{}", run.len()));
        let ctx = context(&dir, &format!("FROM strata-test/busybox:latest\n{run}\n"));
        let o = store.build_with(&ctx, "chroot", &["--secret", &secret_flag]);
        assert_eq!(o.status.code(), Some(1), "{run}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(message),
            "{run}: {}",
            text(&o.stderr)
        );
    }
    let volume = format!("{}:/v", tmp.path().display());
    let o = store.strata(&[
        "run",
        "--rm",
        "--isolation",
        "chroot",
        "-v",
        &volume,
        "strata-test/busybox:latest",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr)
            .contains("a volume (-v) at /v needs mount(2), which --isolation chroot cannot use"),
        "{}",
        text(&o.stderr)
    );
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
