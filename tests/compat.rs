//! The compatibility suite: each case in `tests/compat/cases/*.txtar` (a
//! Dockerfile and its context files) is built by strata and by BuildKit
//! (`DOCKER_BUILDKIT=1 docker build`, docker.io 20.10 started by
//! `.ci/testenv`), both images are read back through the same consumer
//! (`docker create` + `docker export`, `docker image inspect`), and the
//! final root filesystems (path, type, mode, uid, gid, content digest, link
//! target) and the configs must be equal. See tests/compat/README.md.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// What both builders share: a store with the busybox base, and the same
/// base loaded into dockerd under the same name.
struct Shared {
    root: PathBuf,
    host: String,
    _dir: tempfile::TempDir,
}

fn strata() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

fn shared(test: &str) -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    if !strata_testutil::require_root(test) {
        return None;
    }
    let bb = strata_testutil::busybox_tar(test)?;
    let host = strata_testutil::docker_host(test)?;
    SHARED
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            ok(Command::new(strata()).env("STRATA_ROOT", &root).args([
                "import",
                bb.to_str().unwrap(),
                "strata-test/busybox:latest",
            ]));
            let saved = dir.path().join("base.tar");
            ok(Command::new(strata()).env("STRATA_ROOT", &root).args([
                "save",
                "-o",
                saved.to_str().unwrap(),
                "strata-test/busybox:latest",
            ]));
            ok(Command::new("/usr/bin/docker")
                .env("DOCKER_HOST", &host)
                .args(["load", "-i", saved.to_str().unwrap()]));
            Some(Shared {
                root,
                host,
                _dir: dir,
            })
        })
        .as_ref()
}

/// A case: the Dockerfile (text before the first `-- name --` line) and
/// context files. A name may carry `[mode=0755]`, `[symlink]` (the content
/// is the target) or `[tar]` (content lines `path: text` are packed into a
/// tar archive at that name).
fn materialize(case: &str, dir: &Path) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/compat/cases/{case}.txtar")),
    )
    .unwrap();
    let mut sections: Vec<(String, String)> = vec![("Dockerfile".into(), String::new())];
    for line in text.split_inclusive('\n') {
        let t = line.trim_end();
        if let Some(name) = t.strip_prefix("-- ").and_then(|r| r.strip_suffix(" --")) {
            sections.push((name.to_owned(), String::new()));
        } else {
            sections.last_mut().unwrap().1.push_str(line);
        }
    }
    for (spec, content) in sections {
        let (name, attr) = match spec.split_once(" [") {
            Some((n, a)) => (n.to_owned(), a.trim_end_matches(']').to_owned()),
            None => (spec.clone(), String::new()),
        };
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if attr == "symlink" {
            std::os::unix::fs::symlink(content.trim(), &path).unwrap();
        } else if attr == "tar" {
            let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
            for l in content.lines() {
                let (p, data) = l.split_once(": ").unwrap();
                let mut h = tar::Header::new_ustar();
                h.set_size(data.len() as u64 + 1);
                h.set_mode(0o644);
                h.set_mtime(1_600_000_000);
                h.set_cksum();
                b.append_data(&mut h, p, format!("{data}\n").as_bytes())
                    .unwrap();
            }
            b.finish().unwrap();
        } else {
            std::fs::write(&path, content).unwrap();
            if let Some(m) = attr.strip_prefix("mode=") {
                let mode = u32::from_str_radix(m, 8).unwrap();
                std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
            }
        }
    }
}

/// Paths the container runtime itself adds to `docker export` (mount points
/// and files dockerd creates for every container): not part of either image.
fn runtime_path(p: &str) -> bool {
    matches!(
        p,
        ".dockerenv"
            | "etc/hostname"
            | "etc/hosts"
            | "etc/resolv.conf"
            | "etc/mtab"
            | "dev"
            | "proc"
            | "sys"
    ) || p.starts_with("dev/")
        || p.starts_with("proc/")
        || p.starts_with("sys/")
}

/// The exported root filesystem: path -> "type mode uid:gid content".
fn tree(host: &str, image: &str) -> BTreeMap<String, String> {
    let docker = |args: &[&str]| {
        ok(Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", host)
            .args(args))
    };
    let id = String::from_utf8_lossy(&docker(&["create", image, "true"]).stdout)
        .trim()
        .to_owned();
    let export = docker(&["export", &id]);
    docker(&["rm", &id]);
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(&export.stdout[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let p = p.trim_end_matches('/').to_owned();
        if p.is_empty() || runtime_path(&p) {
            continue;
        }
        let h = e.header().clone();
        let kind = h.entry_type();
        let what = match kind {
            tar::EntryType::Symlink => {
                format!("-> {}", e.link_name().unwrap().unwrap().display())
            }
            tar::EntryType::Link => {
                format!("hardlink {}", e.link_name().unwrap().unwrap().display())
            }
            tar::EntryType::Directory => "dir".into(),
            _ => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                format!("{} bytes {:x}", data.len(), Sha256::digest(&data))
            }
        };
        out.insert(
            p,
            format!(
                "{:?} {:o} {}:{} {what}",
                kind,
                h.mode().unwrap() & 0o7777,
                h.uid().unwrap(),
                h.gid().unwrap()
            ),
        );
    }
    out
}

/// The config fields both builders must agree on.
fn config(host: &str, image: &str) -> BTreeMap<String, String> {
    let o = ok(Command::new("/usr/bin/docker")
        .env("DOCKER_HOST", host)
        .args(["image", "inspect", image]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = &v[0]["Config"];
    [
        "Env",
        "Cmd",
        "Entrypoint",
        "WorkingDir",
        "User",
        "ExposedPorts",
        "Volumes",
        "Labels",
        "StopSignal",
        "Healthcheck",
        "Shell",
        "OnBuild",
    ]
    .iter()
    .map(|k| {
        let val = &c[*k];
        // Absent, null and empty are one thing to docker.
        let norm = match val {
            serde_json::Value::Null => "null".to_owned(),
            serde_json::Value::String(s) if s.is_empty() => "null".to_owned(),
            serde_json::Value::Array(a) if a.is_empty() => "null".to_owned(),
            serde_json::Value::Object(o) if o.is_empty() => "null".to_owned(),
            v => v.to_string(),
        };
        ((*k).to_owned(), norm)
    })
    .collect()
}

fn diff(what: &str, ours: &BTreeMap<String, String>, theirs: &BTreeMap<String, String>) -> String {
    let mut s = String::new();
    for (k, v) in theirs {
        match ours.get(k) {
            None => s.push_str(&format!(
                "  {what} {k}: BuildKit has {v}, strata has nothing\n"
            )),
            Some(o) if o != v => s.push_str(&format!(
                "  {what} {k}:\n    BuildKit: {v}\n    strata:   {o}\n"
            )),
            _ => {}
        }
    }
    for (k, v) in ours {
        if !theirs.contains_key(k) {
            s.push_str(&format!(
                "  {what} {k}: strata has {v}, BuildKit has nothing\n"
            ));
        }
    }
    s
}

fn compat(case: &str) {
    let test = format!("compat::{case}");
    let Some(sh) = shared(&test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    materialize(case, &ctx);
    let ours_tag = format!("compat-{}:strata", case.replace('_', "-"));
    let theirs_tag = format!("compat-{}:buildkit", case.replace('_', "-"));
    let archive = dir.path().join("ours.tar");
    ok(Command::new(strata()).env("STRATA_ROOT", &sh.root).args([
        "build",
        "-q",
        "-t",
        &ours_tag,
        "-o",
        &format!("type=docker,dest={}", archive.display()),
        ctx.to_str().unwrap(),
    ]));
    let docker = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/docker");
        c.env("DOCKER_HOST", &sh.host).args(args);
        c
    };
    ok(&mut docker(&["load", "-i", archive.to_str().unwrap()]));
    ok(docker(&[
        "build",
        "-q",
        "--network",
        "none",
        "-t",
        &theirs_tag,
        ctx.to_str().unwrap(),
    ])
    .env("DOCKER_BUILDKIT", "1"));
    let mut report = diff(
        "path",
        &tree(&sh.host, &ours_tag),
        &tree(&sh.host, &theirs_tag),
    );
    report.push_str(&diff(
        "config",
        &config(&sh.host, &ours_tag),
        &config(&sh.host, &theirs_tag),
    ));
    let _ = run(&mut docker(&["rmi", "-f", &ours_tag, &theirs_tag]));
    assert!(
        report.is_empty(),
        "{case}: strata and BuildKit differ:\n{report}"
    );
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                compat(stringify!($name));
            }
        )*
    };
}

cases!(
    add_local_tar,
    add_plain_file,
    arg_default_expansion,
    case_insensitive_keywords,
    cmd_entrypoint_forms,
    cmd_shell_form,
    comments_and_blank_lines,
    copy_chown_by_name,
    copy_chown_numeric,
    copy_dest_expansion,
    copy_dir_contents,
    copy_dir_into_existing,
    copy_dot_context,
    copy_file_into_dir_slash,
    copy_file_rename,
    copy_into_symlinked_dest,
    copy_keeps_modes,
    copy_multiple_sources,
    copy_overwrite_file,
    copy_relative_dest_workdir,
    copy_single_file,
    copy_symlink_in_context,
    copy_wildcards,
    deep_tree,
    dockerignore_basic,
    dockerignore_dockerfile_itself,
    dockerignore_exceptions,
    empty_run_output_layer,
    entrypoint_shell_form,
    env_and_arg_scoping,
    env_legacy_form,
    env_overrides_arg,
    escape_directive,
    expose_volume_stopsignal,
    expose_with_arg,
    file_modes_umask,
    hardlinks_kept,
    healthcheck_cmd,
    healthcheck_none,
    label_expansion,
    labels_and_maintainer,
    multistage_copy_from_image,
    multistage_copy_from_index,
    multistage_copy_from_name,
    multistage_from_stage,
    multistage_target_unused_stage,
    onbuild_recorded,
    run_env_visible,
    run_exec_form,
    run_json_fallback,
    run_line_continuations,
    setuid_and_sticky,
    shell_instruction,
    symlinks_relative_absolute,
    user_by_name_and_id,
    user_uid_gid_numeric,
    whiteout_across_steps,
    whiteout_dir_replaced_by_file,
    whiteout_file_delete,
    whiteout_opaque_dir,
    workdir_created_and_relative,
    workdir_with_env,
    copy_chown_creates_parents,
    workdir_under_user,
    global_arg_not_in_stage,
    copy_chown_with_expansion,
    copy_hidden_files,
);
