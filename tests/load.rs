//! End-to-end tests of `strata build --load`: the image is streamed into a
//! real dockerd's load API and run there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

/// A store with the busybox fixture as `strata-test/busybox:latest`, a
/// context, and the environment strata runs with (no DOCKER_* from ours).
struct Env {
    tmp: tempfile::TempDir,
    docker_host: String,
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        if !strata_testutil::require_root(test) {
            return None;
        }
        let tar = strata_testutil::busybox_tar(test)?;
        let docker_host = strata_testutil::docker_host(test)?;
        let env = Env {
            tmp: tempfile::tempdir().unwrap(),
            docker_host,
        };
        let ctx = env.tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM strata-test/busybox:latest\nRUN echo loaded > /greeting\nCMD [\"cat\", \"/greeting\"]\n",
        )
        .unwrap();
        let o = env.strata(
            &[
                "import",
                tar.to_str().unwrap(),
                "strata-test/busybox:latest",
            ],
            &[],
        );
        assert!(
            o.status.success(),
            "import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Some(env)
    }

    fn ctx(&self) -> PathBuf {
        self.tmp.path().join("ctx")
    }

    fn strata(&self, args: &[&str], vars: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(strata());
        c.args(args)
            .env("STRATA_ROOT", self.tmp.path().join("store"))
            .env("HOME", self.tmp.path())
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_CONFIG");
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .args(args)
            .env("DOCKER_HOST", &self.docker_host)
            .output()
            .unwrap()
    }

    /// Runs `name` in the test dockerd and removes it again.
    fn run_and_remove(&self, name: &str) -> String {
        let o = self.docker(&["run", "--rm", "--network", "none", name]);
        let _ = self.docker(&["rmi", name]);
        assert!(
            o.status.success(),
            "docker run {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn unique(prefix: &str) -> String {
    format!("strata-load-test/{prefix}:{}", std::process::id())
}

#[test]
fn load_streams_the_image_into_the_daemon_named_by_docker_host() {
    let Some(env) = Env::new("load_streams_the_image_into_the_daemon_named_by_docker_host") else {
        return;
    };
    let name = unique("host");
    let host = PathBuf::from(&env.docker_host);
    let o = env.strata(
        &[
            "build",
            "--progress",
            "plain",
            "--load",
            "-t",
            &name,
            env.ctx().to_str().unwrap(),
        ],
        &[("DOCKER_HOST", &host)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "build --load: {err}");
    assert!(err.contains(&format!("Loaded image: {name}")), "{err}");
    assert_eq!(env.run_and_remove(&name), "loaded\n");
}

#[test]
fn load_follows_the_docker_cli_current_context() {
    let Some(env) = Env::new("load_follows_the_docker_cli_current_context") else {
        return;
    };
    // A context as `docker context create ctx --docker host=...` stores it.
    let config = env.tmp.path().join(".docker");
    let id = context_dir_name("strata-ctx");
    let meta = config.join("contexts/meta").join(id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        serde_json::json!({"Name": "strata-ctx", "Metadata": {}, "Endpoints": {"docker": {"Host": env.docker_host, "SkipTLSVerify": false}}}).to_string(),
    )
    .unwrap();
    std::fs::write(
        config.join("config.json"),
        r#"{"currentContext": "strata-ctx"}"#,
    )
    .unwrap();
    let name = unique("context");
    let o = env.strata(
        &[
            "build",
            "-q",
            "--load",
            "-t",
            &name,
            env.ctx().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        o.status.success(),
        "build --load: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(env.run_and_remove(&name), "loaded\n");
}

#[test]
fn an_unreachable_daemon_fails_after_the_build_and_keeps_the_image() {
    let Some(env) = Env::new("an_unreachable_daemon_fails_after_the_build_and_keeps_the_image")
    else {
        return;
    };
    let gone = env.tmp.path().join("no-such-docker.sock");
    let host = PathBuf::from(format!("unix://{}", gone.display()));
    let o = env.strata(
        &[
            "build",
            "--progress",
            "plain",
            "--load",
            "-t",
            "kept:1",
            env.ctx().to_str().unwrap(),
        ],
        &[("DOCKER_HOST", &host)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot connect to the Docker daemon at unix://{}",
            gone.display()
        )),
        "{err}"
    );
    let ids = env.strata(&["images", "-q", "kept:1"], &[]);
    let id = String::from_utf8_lossy(&ids.stdout);
    assert!(!id.trim().is_empty(), "the built image left the store");
    assert!(
        err.contains("The image is in strata's store: sha256:"),
        "{err}"
    );
}

#[test]
fn load_refuses_what_the_docker_cli_refuses() {
    let Some(env) = Env::new("load_refuses_what_the_docker_cli_refuses") else {
        return;
    };
    let ctx = env.ctx();
    let ctx = ctx.to_str().unwrap();
    let o = env.strata(
        &[
            "build",
            "--load",
            "--platform",
            "linux/amd64,linux/arm64",
            ctx,
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("does not currently support exporting manifest lists")
    );
    let ssh = PathBuf::from("ssh://me@example.invalid");
    let o = env.strata(&["build", "--load", ctx], &[("DOCKER_HOST", &ssh)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"ssh\" transport"));
}

/// The docker CLI names a context's folder by the sha256 of its name.
fn context_dir_name(s: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
