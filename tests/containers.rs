//! End-to-end tests of containers through the real `strata` binary: `run`
//! on the executor, `diff` of what it changed, `commit` of that into an image
//! which a later `run` sees, `ps -a`, `rm`, and `rmi` refusing an image a
//! container uses. Need root and the busybox fixture (skip loudly otherwise).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// Rootless: the unprivileged user every `strata` command runs as.
    user: Option<String>,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        Env {
            _dir: dir,
            root,
            user: None,
        }
    }

    /// `strata ARGS` on this store, as root or as the rootless user.
    fn command(&self, args: &[&str]) -> Command {
        // STRATA_TEST_BIN: run these against another build of the binary.
        let exe: PathBuf = std::env::var_os("STRATA_TEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_strata").into())
            .into();
        let mut c = match &self.user {
            None => {
                let mut c = Command::new(exe);
                c.args(args).env("STRATA_ROOT", &self.root);
                c
            }
            Some(user) => {
                // setpriv execs: the child is `strata` itself (a `su`
                // would stay in between, and stops itself when its child
                // is stopped).
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .args(["--init-groups", "--reset-env", "env"])
                    .arg(format!("STRATA_ROOT={}", self.root.display()))
                    .arg(exe)
                    .args(args);
                c
            }
        };
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("spawn strata")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "strata {args:?} failed ({:?}): {}\nstdout: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn setup(test: &str) -> Option<Env> {
    let bb = strata_testutil::busybox_tar(test)?;
    if !strata_testutil::require_root(test) {
        return None;
    }
    let e = Env::new();
    e.ok(&["import", bb.to_str().unwrap_or_default(), "bb:1"]);
    Some(e)
}

/// [`setup`] for rootless containers: a store the test user owns, every
/// command run as that user (it has subordinate IDs, so `strata run` runs
/// in a user namespace). Root is needed to become the user.
fn setup_rootless(test: &str) -> Option<Env> {
    let bb = strata_testutil::busybox_tar(test)?;
    if !strata_testutil::require_root(test) {
        return None;
    }
    let user = strata_testutil::test_user(test)?;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let tar = home.join("busybox.tar");
    std::fs::copy(&bb, &tar).expect("copy the fixture");
    let chown = Command::new("chown")
        .args(["-R", &user])
        .arg(&home)
        .status()
        .expect("chown");
    assert!(chown.success(), "chown {}", home.display());
    let e = Env {
        _dir: dir,
        root: home.join("store"),
        user: Some(user),
    };
    e.ok(&["import", &tar.to_string_lossy(), "bb:1"]);
    Some(e)
}

#[test]
fn run_passes_output_and_exit_code() {
    let Some(e) = setup("run_passes_output_and_exit_code") else {
        return;
    };
    let o = e.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "GREETING=hi",
        "-w",
        "/tmp",
        "bb:1",
        "/bin/sh",
        "-c",
        "echo $GREETING $(pwd); exit 3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi /tmp\n");
    assert_eq!(e.ok(&["ps", "-a", "-q"]), "", "--rm removed it");
}

#[test]
fn diff_commit_and_run_the_committed_image() {
    let Some(e) = setup("diff_commit_and_run_the_committed_image") else {
        return;
    };
    // A base with two files of our own, so the expected diff is known exactly.
    e.ok(&[
        "run",
        "--name",
        "prep",
        "--network",
        "none",
        "bb:1",
        "/bin/sh",
        "-c",
        "mkdir -p /data && echo one > /data/keep && echo two > /data/gone",
    ]);
    e.ok(&["commit", "-m", "prep", "prep", "base:1"]);
    e.ok(&[
        "run",
        "--name",
        "work",
        "--network",
        "none",
        "base:1",
        "/bin/sh",
        "-c",
        "echo added > /data/added && echo changed > /data/keep && rm /data/gone",
    ]);
    // What `docker diff` prints for the same changes, in the same order.
    assert_eq!(
        e.ok(&["diff", "work"]),
        "C /data\nA /data/added\nD /data/gone\nC /data/keep\n"
    );
    let ps = e.ok(&["ps", "-a"]);
    assert!(ps.contains("work") && ps.contains("Exited (0)"), "{ps}");
    // The image a container uses cannot go without -f.
    let o = e.run(&["rmi", "base:1"]);
    assert!(!o.status.success());
    let id = e.ok(&[
        "commit",
        "-a",
        "tester",
        "-c",
        "CMD [\"cat\", \"/data/added\"]",
        "work",
        "done:1",
    ]);
    assert!(id.starts_with("sha256:"));
    let o = e.run(&["run", "--rm", "--network", "none", "done:1"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "added\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = e.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "done:1",
        "/bin/sh",
        "-c",
        "cat /data/keep; test ! -e /data/gone",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "changed\n");
    // The commit's history entry is there, with the message of the first commit below it.
    let hist = e.ok(&["history", "--no-trunc", "done:1"]);
    assert!(
        hist.lines().nth(2).is_some_and(|l| l.contains("prep")),
        "{hist}"
    );
    // The committed image's top layer diff is the container's diff.
    assert_eq!(
        e.ok(&["diff", "done:1"]),
        "C /data\nA /data/added\nD /data/gone\nC /data/keep\n"
    );
    assert_eq!(e.ok(&["rm", "work", "prep"]), "work\nprep\n");
    assert!(e.ok(&["check"]).contains(" 0 problem(s)"));
}

/// A FIFO made in a container: `run` exits with the
/// command's code, `--rm` removes the container, and without `--rm` the
/// FIFO is in the writable layer that `diff` and `commit` read. (It used to
/// fail "paths in archives must be relative" and leave the container "Up".)
#[test]
fn special_files_in_a_container_are_kept_and_rm_still_removes_it() {
    let Some(e) = setup("special_files_in_a_container_are_kept_and_rm_still_removes_it") else {
        return;
    };
    // (Device nodes: only where a step cgroup filters devices does a step keep
    // CAP_MKNOD, issue #14; tests/isolation.rs covers that, so a FIFO here.)
    let mk = "mkfifo /tmp/ff";
    e.ok(&["run", "--rm", "--network", "none", "bb:1", "sh", "-c", mk]);
    let ps = e.ok(&["ps", "-a", "-q"]);
    assert_eq!(ps.trim(), "", "--rm left a container: {ps}");

    e.ok(&[
        "run",
        "--name",
        "pipes",
        "--network",
        "none",
        "bb:1",
        "sh",
        "-c",
        mk,
    ]);
    let ps = e.ok(&["ps", "-a"]);
    assert!(ps.contains("pipes") && ps.contains("Exited (0)"), "{ps}");
    let diff = e.ok(&["diff", "pipes"]);
    assert!(diff.contains("A /tmp/ff"), "{diff}");
    e.ok(&["commit", "pipes", "pipes:1"]);
    let o = e.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "pipes:1",
        "sh",
        "-c",
        "test -p /tmp/ff && echo kept",
    ]);
    assert_eq!(o, "kept\n");
}

/// A container whose `strata run` is killed is not "Up" forever: `ps -a`
/// shows it `Dead`, `ps` leaves it out, and `rm` removes it without `-f`.
#[test]
fn a_container_whose_run_was_killed_is_dead_and_removable() {
    if let Some(e) = setup("a_container_whose_run_was_killed_is_dead_and_removable") {
        dead_semantics(&e);
    }
}

/// The same rootless: the killed run's step directory holds files of
/// subordinate IDs, which `rm` must remove in the user namespace.
#[test]
fn a_rootless_container_whose_run_was_killed_is_dead_and_removable() {
    if let Some(e) =
        setup_rootless("a_rootless_container_whose_run_was_killed_is_dead_and_removable")
    {
        dead_semantics(&e);
    }
}

fn dead_semantics(e: &Env) {
    let mut child = start_container(e, "victim", &["sleep", "300"]);
    signal(child.id(), "KILL");
    child.wait().expect("reap strata run");
    let ps = e.ok(&["ps"]);
    assert!(
        !ps.contains("victim"),
        "a dead container is listed as running: {ps}"
    );
    let all = e.ok(&["ps", "-a"]);
    assert!(all.contains("victim") && all.contains("Dead"), "{all}");
    e.ok(&["rm", "victim"]);
    assert!(!e.ok(&["ps", "-a"]).contains("victim"));
    let left: Vec<_> = std::fs::read_dir(e.root.join("containers"))
        .expect("containers")
        .flatten()
        .map(|d| d.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `kill -SIG pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{sig} {pid}");
}

#[test]
fn run_i_passes_stdin_and_volumes_write_through_to_the_host() {
    let Some(e) = setup("run_i_passes_stdin_and_volumes_write_through_to_the_host") else {
        return;
    };
    let exe =
        std::env::var_os("STRATA_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_strata").into());
    let mut child = Command::new(&exe)
        .args([
            "run",
            "--rm",
            "-i",
            "bb:1",
            "sh",
            "-c",
            "tr a-z A-Z; echo done",
        ])
        .env("STRATA_ROOT", &e.root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from the pipe\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FROM THE PIPE\ndone\n"
    );
    // Without -i the container reads nothing (docker's default).
    assert_eq!(
        e.ok(&["run", "--rm", "bb:1", "sh", "-c", "cat; echo eof"]),
        "eof\n"
    );
    // -v: writes reach the host; :ro refuses them; a missing host dir is made.
    let vol = e.root.parent().unwrap().join("vol");
    let spec = format!("{}:/data", vol.display());
    e.ok(&[
        "run",
        "--rm",
        "-v",
        &spec,
        "bb:1",
        "sh",
        "-c",
        "echo kept > /data/out.txt",
    ]);
    assert_eq!(
        std::fs::read_to_string(vol.join("out.txt")).unwrap(),
        "kept\n"
    );
    let ro = format!("{}:/data:ro", vol.display());
    let o = e.run(&[
        "run",
        "--rm",
        "-v",
        &ro,
        "bb:1",
        "sh",
        "-c",
        "echo no > /data/x",
    ]);
    assert!(!o.status.success());
    assert!(!vol.join("x").exists());
    assert_eq!(
        e.ok(&["run", "--rm", "-v", &ro, "bb:1", "cat", "/data/out.txt"]),
        "kept\n"
    );
}

#[test]
fn diff_prints_what_docker_diff_prints_for_the_same_changes() {
    let t = "diff_prints_what_docker_diff_prints_for_the_same_changes";
    let Some(e) = setup(t) else {
        return;
    };
    let Some(host) = strata_testutil::docker_host(t) else {
        return;
    };
    // The same image in docker: saved from our store, loaded there.
    let tar = e.root.parent().unwrap().join("bb.tar");
    e.ok(&["save", "-o", tar.to_str().unwrap(), "bb:1"]);
    let docker = |args: &[&str]| {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", &host)
            .output()
            .unwrap()
    };
    let load = docker(&["load", "-i", tar.to_str().unwrap()]);
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    // Adds, changes, deletes, a new directory tree, a replaced directory, a
    // symlink and a mode change.
    let script = "echo a > /etc/added && echo x >> /etc/passwd && rm /bin/vi && \
                  mkdir -p /srv/new/deep && touch /srv/new/deep/f && rm -rf /home && \
                  echo replaced > /home && ln -s /etc/added /root/link && chmod 600 /etc/group";
    let name = format!("strata-diff-{}", std::process::id());
    let run = docker(&[
        "run",
        "--name",
        &name,
        "--network",
        "none",
        "bb:1",
        "sh",
        "-c",
        script,
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let theirs = docker(&["diff", &name]);
    let _ = docker(&["rm", "-f", &name]);
    let _ = docker(&["rmi", "bb:1"]);
    e.ok(&[
        "run",
        "--name",
        "ours",
        "--network",
        "none",
        "bb:1",
        "sh",
        "-c",
        script,
    ]);
    let ours = e.ok(&["diff", "ours"]);
    // docker diff's order is its own walk's; compare the sets of lines.
    let set = |s: &str| {
        let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(set(&ours), set(&String::from_utf8_lossy(&theirs.stdout)));
}

#[test]
fn steps_run_under_dockers_default_seccomp_restrictions() {
    let Some(e) = setup("steps_run_under_dockers_default_seccomp_restrictions") else {
        return;
    };
    // A new user namespace needs no capability, so only seccomp stops it.
    let o = e.run(&["run", "--rm", "bb:1", "unshare", "-U", "true"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Ordinary work, forks and pipes included, is unaffected.
    assert_eq!(
        e.ok(&[
            "run",
            "--rm",
            "bb:1",
            "sh",
            "-c",
            "(echo a; echo b) | sort -r | head -1"
        ]),
        "b\n"
    );
    // Docker's opt-out turns the filter off.
    e.ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        "bb:1",
        "unshare",
        "-U",
        "true",
    ]);
}

/// Starts `strata run --name NAME bb:1 ARGV` in the background and waits
/// until its process runs (its pid file is written).
fn start_container(e: &Env, name: &str, argv: &[&str]) -> std::process::Child {
    let mut args = vec!["run", "--name", name, "--network", "none", "bb:1"];
    args.extend_from_slice(argv);
    let mut child = e
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let started = std::fs::read_dir(e.root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
            .any(|s| s.path().join("pid").is_file());
        if started && e.ok(&["ps"]).contains(name) {
            // The shell's trap is set up by its first command.
            std::thread::sleep(std::time::Duration::from_millis(300));
            return child;
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!("container {name} never started");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The `ps -a` status of container `name`.
fn status_of(e: &Env, name: &str) -> String {
    e.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
        .unwrap_or_default()
}

/// `docker stop`: the stop signal first (a shell trapping it exits with its
/// own code at once), SIGKILL after `-t` seconds when it is ignored (a PID 1
/// without a handler ignores SIGTERM); afterwards `ps -a` shows the exit
/// code, `strata run` exits with it, and `rm` needs no `-f`.
#[test]
fn stop_sends_the_stop_signal_then_sigkill_after_the_timeout() {
    if let Some(e) = setup("stop_sends_the_stop_signal_then_sigkill_after_the_timeout") {
        stop_semantics(&e);
    }
}

/// The same as a user with subordinate IDs: `strata run` ran rootless.
#[test]
fn stop_works_on_a_rootless_container() {
    if let Some(e) = setup_rootless("stop_works_on_a_rootless_container") {
        stop_semantics(&e);
    }
}

fn stop_semantics(e: &Env) {
    let mut trapping = start_container(
        e,
        "trapping",
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; while :; do sleep 0.1; done",
        ],
    );
    let started = std::time::Instant::now();
    assert_eq!(e.ok(&["stop", "trapping"]), "trapping\n");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        status_of(e, "trapping").starts_with("Exited (7)"),
        "{}",
        status_of(e, "trapping")
    );
    assert_eq!(trapping.wait().expect("wait").code(), Some(7));
    e.ok(&["rm", "trapping"]);

    let mut ignoring = start_container(e, "ignoring", &["sleep", "300"]);
    let started = std::time::Instant::now();
    assert_eq!(e.ok(&["stop", "--time", "1", "ignoring"]), "ignoring\n");
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(8),
        "{took:?}"
    );
    assert!(
        status_of(e, "ignoring").starts_with("Exited (137)"),
        "{}",
        status_of(e, "ignoring")
    );
    assert_eq!(ignoring.wait().expect("wait").code(), Some(137));
    // Stopping a stopped container is not an error (as in Docker).
    assert_eq!(e.ok(&["stop", "ignoring"]), "ignoring\n");
    e.ok(&["rm", "ignoring"]);

    let o = e.run(&["stop", "-s", "NOPE", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid signal: NOPE"));
}

/// `docker kill`: SIGKILL by default (exit 137), `-s` another signal; a
/// container that is not running is an error.
#[test]
fn kill_sends_sigkill_or_the_given_signal() {
    if let Some(e) = setup("kill_sends_sigkill_or_the_given_signal") {
        kill_semantics(&e);
    }
}

/// The same as a user with subordinate IDs: `strata run` ran rootless.
#[test]
fn kill_works_on_a_rootless_container() {
    if let Some(e) = setup_rootless("kill_works_on_a_rootless_container") {
        kill_semantics(&e);
    }
}

fn kill_semantics(e: &Env) {
    let mut victim = start_container(e, "victim", &["sleep", "300"]);
    assert_eq!(e.ok(&["kill", "victim"]), "victim\n");
    assert!(
        status_of(e, "victim").starts_with("Exited (137)"),
        "{}",
        status_of(e, "victim")
    );
    assert_eq!(victim.wait().expect("wait").code(), Some(137));
    let o = e.run(&["kill", "victim"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("container")
            && String::from_utf8_lossy(&o.stderr).contains("is not running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    e.ok(&["rm", "victim"]);

    let mut usr1 = start_container(
        e,
        "usr1",
        &[
            "sh",
            "-c",
            "trap 'exit 42' USR1; while :; do sleep 0.1; done",
        ],
    );
    assert_eq!(e.ok(&["kill", "--signal", "usr1", "usr1"]), "usr1\n");
    assert_eq!(usr1.wait().expect("wait").code(), Some(42));
    assert!(
        status_of(e, "usr1").starts_with("Exited (42)"),
        "{}",
        status_of(e, "usr1")
    );
    e.ok(&["rm", "usr1"]);
}

/// `stop` on a container whose process has exited while its `strata run`
/// is still recording the exit (saving a large writable layer; here held
/// there by SIGSTOP) waits for the record, as Docker's stop waits for the
/// exit, instead of failing with "no running process found".
#[test]
fn stop_waits_for_a_container_that_is_exiting() {
    if let Some(e) = setup("stop_waits_for_a_container_that_is_exiting") {
        stop_while_exiting(&e);
    }
}

#[test]
fn stop_waits_for_a_rootless_container_that_is_exiting() {
    if let Some(e) = setup_rootless("stop_waits_for_a_rootless_container_that_is_exiting") {
        stop_while_exiting(&e);
    }
}

fn stop_while_exiting(e: &Env) {
    let mut run = start_container(e, "exiting", &["sleep", "300"]);
    let owner = run.id();
    let step: u32 = std::fs::read_dir(e.root.join("containers"))
        .expect("containers")
        .flatten()
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .find_map(|s| std::fs::read_to_string(s.path().join("pid")).ok())
        .and_then(|p| p.trim().parse().ok())
        .expect("the step's pid");
    signal(owner, "STOP");
    // The step goes; its `strata run`, stopped, cannot record that yet.
    signal(step, "KILL");
    let gone = Path::new("/proc").join(step.to_string());
    for _ in 0..600 {
        if !gone.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!gone.exists(), "the step {step} did not exit");
    let mut stop = e
        .command(&["stop", "exiting"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata stop");
    // Long enough for a stop that gives up at once to have done so.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let early = stop.try_wait().expect("try_wait");
    signal(owner, "CONT");
    let out = stop.wait_with_output().expect("wait for stop");
    assert!(
        early.is_none() && out.status.success(),
        "stop: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "exiting\n");
    assert_eq!(run.wait().expect("wait").code(), Some(137));
    assert!(
        status_of(e, "exiting").starts_with("Exited (137)"),
        "{}",
        status_of(e, "exiting")
    );
    e.ok(&["rm", "exiting"]);
}
