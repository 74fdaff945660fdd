//! The compatibility suite: every case in `tests/compat/cases/NAME/` (a
//! Dockerfile and its context) is built by strata and by the reference,
//! BuildKit 0.25 (`docker buildx build --load --network none` on the dockerd
//! 28.5 that `.ci/testenv` starts), at the same time. Both images are read
//! back through the same consumer, that dockerd (`docker create` + `docker
//! export` for the file tree, `docker save` for the config and history), and
//! must agree; or, for a case with `FAILS`, both builds must fail and
//! strata's error must name the failing line. A case with `DIVERGES`
//! documents a known strata bug: it must still differ (so it turns red the
//! day the bug is fixed). See tests/compat/README.md.

#![expect(
    clippy::print_stderr,
    reason = "a DIVERGES case prints how it still differs"
)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest as _, Sha256};

/// The base image every case builds FROM, loaded into the reference dockerd
/// under this name (and imported into strata's store). A name of our own,
/// so nothing else on the daemon changes what a case builds on; BuildKit's
/// docker driver takes it from the daemon's image store, never pulling
/// (the builds run with `--network none`).
const BASE: &str = "strata-compat/busybox:1";

/// Files of a case folder that are the harness's, not the build context's.
const RESERVED: &[&str] = &[
    "NOTES.md",
    "MODES",
    "SOURCE",
    "DIVERGES",
    "FAILS",
    "BUILD_ARGS",
    "BUILD_CONTEXTS",
    "BUILD_FLAGS",
    "DEFAULT_TIMES",
];

/// The `SOURCE_DATE_EPOCH` both builds get (2006-06-11), between the two
/// mtimes a case's context entries have, so that a COPY brings both files
/// older than the epoch (kept) and newer (clamped to it) into the image.
const SOURCE_DATE_EPOCH: u64 = 1_150_000_000;

/// FNV-1a: stable across runs and platforms.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The times of one case: the two mtimes its context entries get, so that
/// an mtime the reference keeps from the context (or from the base, whose
/// entries are at 0) is told from one a build step sets, and the epoch its
/// builds run with.
#[derive(Clone, Copy)]
struct Times {
    /// Of the context entries older than the epoch, in 2001-2004.
    older: u64,
    /// Of the others, in 2008-2011, after the epoch.
    newer: u64,
    /// `SOURCE_DATE_EPOCH` of both builds, with the reference's layer
    /// mtimes clamped to it (BuildKit's `rewrite-timestamp=true`); `None`
    /// for a `DEFAULT_TIMES` case, built as a user would without one.
    epoch: Option<u64>,
}

impl Times {
    /// One pair of mtimes per case: BuildKit's context transfer takes a file
    /// whose path, size and mtime match one it has already seen as
    /// unchanged, so two cases' `archive.tar` of the same size at the same
    /// mtime would swap contents.
    fn of(case: &str, default_times: bool) -> Times {
        let older = 1_000_000_000 + fnv(case.as_bytes()) % 100_000_000;
        Times {
            older,
            newer: older + 200_000_000,
            epoch: (!default_times).then_some(SOURCE_DATE_EPOCH),
        }
    }

    /// A context entry's mtime: older or newer than the epoch by its path
    /// (relative to the context, "" for the context itself), so that a
    /// case's files and directories have both.
    fn of_context_path(&self, rel: &Path) -> u64 {
        if fnv(rel.as_os_str().as_encoded_bytes()).is_multiple_of(2) {
            self.older
        } else {
            self.newer
        }
    }
}

/// A root filesystem as docker exports it: path -> "type mode uid:gid mtime what".
type Tree = BTreeMap<String, String>;

/// Compared fields (config fields, history entries): name -> value.
type Fields = BTreeMap<String, String>;

/// What every case shares: a strata store holding the base image and the
/// reference dockerd with the same image loaded.
struct Suite {
    root: PathBuf,
    host: String,
    /// A private DOCKER_CONFIG, so that buildx's state never meets a user's.
    docker_config: PathBuf,
    _dir: tempfile::TempDir,
}

fn strata() -> PathBuf {
    std::env::var_os("STRATA_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_strata")))
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/cases")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> Output {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// How a build ended: Ok, or its error output.
type BuildResult = Result<(), String>;

fn finished(o: Output) -> BuildResult {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        ))
    }
}

impl Suite {
    fn get(test: &str) -> Option<&'static Suite> {
        static SUITE: OnceLock<Suite> = OnceLock::new();
        if !strata_testutil::require_root(test) {
            return None;
        }
        let busybox = strata_testutil::busybox_tar(test)?;
        let host = strata_testutil::reference_docker_host(test)?;
        Some(SUITE.get_or_init(|| Suite::new(&busybox, host)))
    }

    fn new(busybox: &Path, host: String) -> Suite {
        let dir = tempfile::tempdir().expect("temporary directory");
        let root = dir.path().join("store");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir(&docker_config).expect("docker config directory");
        let strata =
            |args: &[&str]| ok(Command::new(strata()).env("STRATA_ROOT", &root).args(args));
        let busybox = busybox.to_str().expect("STRATA_TEST_BUSYBOX_TAR is UTF-8");
        strata(&["import", busybox, BASE]);
        let saved = dir.path().join("base.tar");
        let saved = saved.to_str().expect("temporary path is UTF-8");
        strata(&["save", "-o", saved, BASE]);
        let suite = Suite {
            root,
            host,
            docker_config,
            _dir: dir,
        };
        ok(&mut suite.docker(&["load", "-q", "-i", saved]));
        suite
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/local/bin/docker");
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
            .args(args);
        c
    }

    /// The image's root filesystem through `docker create` + `docker export`.
    /// With `clamp`, every mtime later than it is shown as it: BuildKit's
    /// `rewrite-timestamp=true` (`rewriteTimestampInTarHeader` in
    /// moby/buildkit util/converter), which the reference dockerd's image
    /// store exporter takes and ignores (see tests/compat/README.md). It
    /// leaves the base's layers alone, whose entries here are all at 0.
    fn tree(&self, image: &str, times: Times, clamp: Option<u64>) -> Tree {
        let created = ok(&mut self.docker(&["create", image, "true"]));
        let id = String::from_utf8_lossy(&created.stdout).trim().to_owned();
        let export = run(&mut self.docker(&["export", &id]));
        ok(&mut self.docker(&["rm", &id]));
        assert!(
            export.status.success(),
            "docker export {image}: {}",
            String::from_utf8_lossy(&export.stderr)
        );
        let mut tree = Tree::new();
        let mut archive = tar::Archive::new(&export.stdout[..]);
        for entry in archive.entries().expect("docker export is a tar") {
            let mut entry = entry.expect("docker export entry");
            let path = entry.path().expect("entry path").display().to_string();
            let path = path.trim_end_matches('/').to_owned();
            if path.is_empty() || added_by_docker(&path) {
                continue;
            }
            let desc = describe(&path, &mut entry, times, clamp);
            tree.insert(path, desc);
        }
        tree
    }

    /// The compared config fields and the history of the image, from the
    /// image config `docker save` writes.
    fn config_and_history(&self, image: &str) -> (Fields, Fields) {
        let saved = run(&mut self.docker(&["save", image]));
        if !saved.status.success()
            && String::from_utf8_lossy(&saved.stderr).contains("empty export")
        {
            return self.layerless_config_and_history(image);
        }
        assert!(
            saved.status.success(),
            "docker save {image}: {}",
            String::from_utf8_lossy(&saved.stderr)
        );
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut archive = tar::Archive::new(&saved.stdout[..]);
        for entry in archive.entries().expect("docker save is a tar") {
            let mut entry = entry.expect("docker save entry");
            let path = entry.path().expect("entry path").display().to_string();
            if path == "manifest.json" || path.ends_with(".json") || path.starts_with("blobs/") {
                let mut data = Vec::new();
                entry
                    .read_to_end(&mut data)
                    .expect("docker save entry data");
                files.insert(path, data);
            }
        }
        let manifest: serde_json::Value = serde_json::from_slice(
            files
                .get("manifest.json")
                .expect("docker save has manifest.json"),
        )
        .expect("manifest.json is JSON");
        let config_path = manifest[0]["Config"]
            .as_str()
            .expect("manifest names a config");
        let config: serde_json::Value = serde_json::from_slice(
            files
                .get(config_path)
                .expect("the config is in the archive"),
        )
        .expect("the image config is JSON");
        let fields = normalize_config(&config["config"]);
        let mut history = Fields::new();
        for (i, h) in config["history"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let empty = h["empty_layer"].as_bool().unwrap_or(false);
            let by = h["created_by"].as_str().unwrap_or_default();
            history.insert(
                format!("{i:02}"),
                format!("{by:?}{}", if empty { " (empty layer)" } else { "" }),
            );
        }
        (fields, history)
    }
}

impl Suite {
    /// dockerd cannot `docker save` an image without layers (`FROM
    /// scratch` and config only: "empty export - not implemented"): its
    /// config comes from `docker image inspect` and its history from
    /// `docker history`, every entry an empty layer (there is no layer).
    fn layerless_config_and_history(&self, image: &str) -> (Fields, Fields) {
        let o = ok(&mut self.docker(&["image", "inspect", image]));
        let v: serde_json::Value =
            serde_json::from_slice(&o.stdout).expect("docker image inspect prints JSON");
        let fields = normalize_config(&v[0]["Config"]);
        let o = ok(&mut self.docker(&[
            "history",
            "--no-trunc",
            "--format",
            "{{json .CreatedBy}}",
            image,
        ]));
        let lines = String::from_utf8_lossy(&o.stdout).into_owned();
        let mut entries: Vec<&str> = lines.lines().collect();
        // Newest first.
        entries.reverse();
        let history = entries
            .iter()
            .enumerate()
            .map(|(i, by)| {
                let by: String = serde_json::from_str(by).expect("a JSON string");
                (format!("{i:02}"), format!("{by:?} (empty layer)"))
            })
            .collect();
        (fields, history)
    }
}

/// What dockerd's init layer puts into every container, above the image, so
/// `docker export` shows dockerd's entry and never the image's: `/.dockerenv`,
/// `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`, the `/etc/mtab`
/// symlink, and the mount points `/dev`, `/dev/pts`, `/dev/shm`,
/// `/dev/console`, `/proc`, `/sys`. Anything else the image has under `/dev`
/// (or `/proc`, `/sys`) is compared.
fn added_by_docker(path: &str) -> bool {
    matches!(
        path,
        ".dockerenv"
            | "etc/hostname"
            | "etc/hosts"
            | "etc/resolv.conf"
            | "etc/mtab"
            | "dev"
            | "dev/pts"
            | "dev/shm"
            | "dev/console"
            | "proc"
            | "sys"
    )
}

/// An mtime as what it says: kept from the context (older or newer than
/// the epoch), kept from the base image (whose entries are all at 0), the
/// epoch, or set during the build. Symlinks have none worth comparing, and
/// dockerd's init layer sets `/etc`'s.
fn mtime_kind(path: &str, kind: &str, mtime: u64, times: Times) -> &'static str {
    if kind == "symlink" || path == "etc" {
        return "";
    }
    match mtime {
        0 => " t=base",
        m if m == times.older => " t=context",
        m if m == times.newer => " t=context-newer",
        m if Some(m) == times.epoch => " t=epoch",
        _ => " t=build",
    }
}

/// An mtime is compared where the reference kept one (from the context or
/// the base) or clamped one to the epoch; where a build step set it and
/// nothing clamped it, the time itself is the build's (and strata clamps
/// it for reproducible images), so any will do.
fn only_kept_mtimes(reference: &Tree, mut ours: Tree) -> Tree {
    for (path, desc) in ours.iter_mut() {
        if reference.get(path).is_some_and(|r| r.contains(" t=build")) {
            *desc = desc
                .split(' ')
                .map(|w| if w.starts_with("t=") { "t=build" } else { w })
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    ours
}

/// One entry as "type mode uid:gid mtime what": short text content is shown
/// quoted (so a diff is readable), other content by size and sha256.
fn describe<R: Read>(
    path: &str,
    entry: &mut tar::Entry<R>,
    times: Times,
    clamp: Option<u64>,
) -> String {
    let header = entry.header().clone();
    let mtime = header.mtime().unwrap_or(1);
    let mtime = clamp.map_or(mtime, |c| mtime.min(c));
    let link = || {
        entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.display().to_string())
            .unwrap_or_default()
    };
    let (kind, what) = match header.entry_type() {
        tar::EntryType::Symlink => ("symlink", format!("-> {}", link())),
        tar::EntryType::Link => ("hardlink", format!("=> {}", link())),
        tar::EntryType::Directory => ("dir", String::new()),
        tar::EntryType::Char => ("char", device(&header)),
        tar::EntryType::Block => ("block", device(&header)),
        tar::EntryType::Fifo => ("fifo", String::new()),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("exported file data");
            ("file", content(&data))
        }
        other => ("other", format!("{other:?}")),
    };
    let line = format!(
        "{kind} {:04o} {}:{}{} {what}",
        header.mode().unwrap_or(0) & 0o7777,
        header.uid().unwrap_or(u64::MAX),
        header.gid().unwrap_or(u64::MAX),
        mtime_kind(path, kind, mtime, times),
    );
    line.trim_end().to_owned()
}

fn device(h: &tar::Header) -> String {
    format!(
        "{},{}",
        h.device_major().ok().flatten().unwrap_or(0),
        h.device_minor().ok().flatten().unwrap_or(0)
    )
}

fn content(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) if s.len() <= 80 && !s.contains('"') && !s.contains('\\') => format!("{s:?}"),
        _ => format!("{} bytes sha256:{:x}", data.len(), Sha256::digest(data)),
    }
}

const CONFIG_FIELDS: &[&str] = &[
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
];

/// Absent, null and empty are one thing to docker ("no value").
fn normalize_config(c: &serde_json::Value) -> Fields {
    CONFIG_FIELDS
        .iter()
        .map(|k| {
            let norm = match &c[*k] {
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

/// What kind of difference a case shows; a `DIVERGES` line names one.
const TOPICS: &[&str] = &["build", "tree", "mtime", "config", "history"];

/// One difference: its topic and a readable block.
type Difference = (&'static str, String);

/// Differences, one readable block per key; empty when equal. `topic`
/// says what kind they are (a path that differs only in its mtime is
/// `mtime`, see [`mtime_only`]).
fn diff<V: PartialEq + std::fmt::Display>(
    what: &str,
    topic: &'static str,
    want: &BTreeMap<String, V>,
    ours: &BTreeMap<String, V>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    for (k, v) in want {
        match ours.get(k) {
            None => out.push((
                topic,
                format!("  {what} {k}\n    BuildKit: {v}\n    strata:   (none)\n"),
            )),
            Some(o) if o != v => {
                let t = if topic == "tree" && mtime_only(&v.to_string(), &o.to_string()) {
                    "mtime"
                } else {
                    topic
                };
                out.push((
                    t,
                    format!("  {what} {k}\n    BuildKit: {v}\n    strata:   {o}\n"),
                ));
            }
            _ => {}
        }
    }
    for (k, v) in ours {
        if !want.contains_key(k) {
            out.push((
                topic,
                format!("  {what} {k}\n    BuildKit: (none)\n    strata:   {v}\n"),
            ));
        }
    }
    out
}

/// Whether two entry descriptions differ in their mtime only.
fn mtime_only(a: &str, b: &str) -> bool {
    let strip = |d: &str| {
        d.split(' ')
            .filter(|w| !w.starts_with("t="))
            .collect::<Vec<_>>()
            .join(" ")
    };
    strip(a) == strip(b)
}

/// The topics a `DIVERGES` file names: lines `topic: what differs (issue
/// #13 item)`.
fn diverging_topics(case: &str, text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let topic = l.split(':').next().unwrap_or_default().trim();
            assert!(
                TOPICS.contains(&topic),
                "{case}/DIVERGES: line {l:?}: want `TOPIC: what differs`, TOPIC one of {TOPICS:?}"
            );
            topic.to_owned()
        })
        .collect()
}

/// Copies the case folder (less the harness's files) into `ctx` with modes
/// normalized to 0644/0755 (git keeps only the executable bit, and the
/// checkout's umask must not change a result), applies `MODES` lines
/// (`0600 path`) for the modes git cannot keep, and sets each entry's mtime
/// (see [`Times::of_context_path`]).
fn materialize(case_dir: &Path, ctx: &Path, times: Times) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut made = Vec::new();
    for entry in walkdir::WalkDir::new(case_dir)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.expect("walking the case folder");
        let rel = entry
            .path()
            .strip_prefix(case_dir)
            .expect("below the case folder");
        let top = rel.components().next().map(|c| c.as_os_str());
        if RESERVED
            .iter()
            .any(|r| top == Some(std::ffi::OsStr::new(r)))
        {
            continue;
        }
        let to = ctx.join(rel);
        let ft = entry.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(entry.path()).expect("reading a case symlink");
            std::os::unix::fs::symlink(target, &to).expect("making a context symlink");
            continue;
        } else if ft.is_dir() {
            std::fs::create_dir(&to).expect("making a context directory");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        } else {
            std::fs::copy(entry.path(), &to).expect("copying a context file");
            let exec = entry.metadata().expect("stat").permissions().mode() & 0o111 != 0;
            let mode = if exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        made.push(to);
    }
    if let Ok(modes) = std::fs::read_to_string(case_dir.join("MODES")) {
        for line in modes.lines().filter(|l| !l.trim().is_empty()) {
            let (mode, path) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("MODES line {line:?}: want `0600 path`"));
            let mode =
                u32::from_str_radix(mode, 8).unwrap_or_else(|e| panic!("MODES line {line:?}: {e}"));
            std::fs::set_permissions(ctx.join(path), std::fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("MODES line {line:?}: {e}"));
        }
    }
    let _ = std::fs::set_permissions(ctx, std::fs::Permissions::from_mode(0o755));
    // Deepest first, so that no later step touches a parent's mtime.
    made.push(ctx.to_owned());
    for path in made.iter().rev() {
        let rel = path.strip_prefix(ctx).expect("below the context");
        let when =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(times.of_context_path(rel));
        let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        f.set_times(
            std::fs::FileTimes::new()
                .set_modified(when)
                .set_accessed(when),
        )
        .unwrap_or_else(|e| panic!("{}: setting mtime: {e}", path.display()));
    }
}

/// Where both builds must fail, from `FAILS`: a 1-based Dockerfile line,
/// or `any` for an error no line causes (a bad `.dockerignore`).
#[derive(Clone, Copy)]
enum Failure {
    Line(usize),
    Anywhere,
}

fn expected_failure(case_dir: &Path) -> Option<Failure> {
    let text = std::fs::read_to_string(case_dir.join("FAILS")).ok()?;
    let first = text.lines().next().unwrap_or_default().trim();
    if first == "any" {
        return Some(Failure::Anywhere);
    }
    Some(Failure::Line(first.parse().unwrap_or_else(|e| {
        panic!(
            "{}/FAILS: want a line number or `any` first: {e}",
            case_dir.display()
        )
    })))
}

/// Whether strata's error points at the failing line (`Dockerfile:N`).
fn names_line(error: &str, failure: Failure) -> bool {
    match failure {
        Failure::Anywhere => true,
        Failure::Line(n) => {
            let at = format!("Dockerfile:{n}");
            error
                .match_indices(&at)
                .any(|(i, _)| !error[i + at.len()..].starts_with(|c: char| c.is_ascii_digit()))
        }
    }
}

/// `BUILD_ARGS`: `KEY=VALUE` lines, passed as `--build-arg` to both builds.
fn build_args(case_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(case_dir.join("BUILD_ARGS"))
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .flat_map(|l| ["--build-arg".to_owned(), l.to_owned()])
                .collect()
        })
        .unwrap_or_default()
}

/// `BUILD_CONTEXTS`: `NAME=VALUE` lines, passed as `--build-context` to
/// both builds; a VALUE with no `scheme://` is a folder of the case's
/// context (`extra=extra`), given to both by its path there.
fn build_contexts(case_dir: &Path, ctx: &Path) -> Vec<String> {
    std::fs::read_to_string(case_dir.join("BUILD_CONTEXTS"))
        .map(|t| {
            t.lines()
                .filter(|l| !l.trim().is_empty())
                .flat_map(|l| {
                    let (name, value) =
                        l.split_once('=').expect("BUILD_CONTEXTS: NAME=VALUE lines");
                    let value = if value.contains("://") {
                        value.to_owned()
                    } else {
                        ctx.join(value).display().to_string()
                    };
                    ["--build-context".to_owned(), format!("{name}={value}")]
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `BUILD_FLAGS`: lines each passed as one argument to both builds, in
/// the `--flag=value` form both command lines take (`--ulimit=nofile=1024`).
fn build_flags(case_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(case_dir.join("BUILD_FLAGS"))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn compat(case: &str) {
    let test = format!("compat::{case}");
    let Some(suite) = Suite::get(&test) else {
        return;
    };
    let case_dir = cases_dir().join(case);
    let dir = tempfile::tempdir().expect("temporary directory");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("context directory");
    let times = Times::of(case, case_dir.join("DEFAULT_TIMES").exists());
    materialize(&case_dir, &ctx, times);
    // Both builds get the epoch as a user gives it, from the environment
    // (buildx passes it on as the `SOURCE_DATE_EPOCH` build arg); a
    // `DEFAULT_TIMES` case has none, whatever the test's environment says.
    let with_epoch = |cmd: &mut Command| match times.epoch {
        Some(e) => {
            cmd.env("SOURCE_DATE_EPOCH", e.to_string());
        }
        None => {
            cmd.env_remove("SOURCE_DATE_EPOCH");
        }
    };
    // With an epoch the reference rewrites its layers' timestamps, as a
    // reproducible build asks (docs/build-repro.md in moby/buildkit).
    let reference_output = match times.epoch {
        Some(_) => "type=docker,rewrite-timestamp=true",
        None => "type=docker",
    };
    // Unique per run, so two runs on the shared dockerd never meet.
    let name = format!("strata-compat/{}", case.replace('_', "-"));
    let ours = format!("{name}:strata-{}", std::process::id());
    let theirs = format!("{name}:buildkit-{}", std::process::id());
    let fails = expected_failure(&case_dir);
    let diverges = std::fs::read_to_string(case_dir.join("DIVERGES")).ok();
    let mut build_args = build_args(&case_dir);
    build_args.extend(build_contexts(&case_dir, &ctx));
    build_args.extend(build_flags(&case_dir));

    // `--no-cache` on both sides: neither cache key has mtimes in it (as
    // BuildKit's does not), so a cached COPY would bring the mtimes of
    // another case with the same file along.
    let build_ours = || -> BuildResult {
        let archive = dir.path().join("ours.tar");
        let mut cmd = Command::new(strata());
        with_epoch(&mut cmd);
        finished(run(cmd
            .env("STRATA_ROOT", &suite.root)
            .args(["build", "--no-cache", "-q", "-t", &ours, "-o"])
            .arg(format!("type=docker,dest={}", archive.display()))
            .args(&build_args)
            .arg(&ctx)))?;
        ok(&mut suite.docker(&["load", "-q", "-i", &archive.display().to_string()]));
        Ok(())
    };
    let build_theirs = || -> BuildResult {
        let mut cmd = suite.docker(&[
            "buildx",
            "build",
            "--no-cache",
            "--output",
            reference_output,
            "-q",
            "--network",
            "none",
            "-t",
            &theirs,
        ]);
        with_epoch(&mut cmd);
        finished(run(cmd.args(&build_args).arg(&ctx)))
    };
    let (theirs_result, ours_result) = std::thread::scope(|s| {
        let t = s.spawn(build_theirs);
        let o = build_ours();
        match t.join() {
            Ok(t) => (t, o),
            Err(e) => std::panic::resume_unwind(e),
        }
    });
    let differences: Vec<Difference> = match (&theirs_result, &ours_result, fails) {
        (Err(e), _, None) => panic!("{case}: the reference build failed (no FAILS file):\n{e}"),
        (Ok(()), _, Some(_)) => {
            panic!("{case}: FAILS says the build fails, but the reference built the image")
        }
        (Err(_), Err(e), Some(f)) if names_line(e, f) => Vec::new(),
        (Err(them), Err(e), Some(_)) => vec![(
            "build",
            format!(
                "  both fail, but strata's error does not name the line FAILS gives:\n{e}\n  BuildKit:\n{them}\n"
            ),
        )],
        (Err(them), Ok(()), Some(_)) => vec![(
            "build",
            format!("  BuildKit fails, strata built the image; BuildKit:\n{them}\n"),
        )],
        (Ok(()), Err(e), None) => vec![(
            "build",
            format!("  BuildKit built the image, strata failed:\n{e}\n"),
        )],
        (Ok(()), Ok(()), None) => {
            let theirs_tree = suite.tree(&theirs, times, times.epoch);
            let ours_tree = only_kept_mtimes(&theirs_tree, suite.tree(&ours, times, None));
            let mut d = diff("path", "tree", &theirs_tree, &ours_tree);
            let (their_config, their_history) = suite.config_and_history(&theirs);
            let (our_config, our_history) = suite.config_and_history(&ours);
            d.extend(diff("config", "config", &their_config, &our_config));
            d.extend(diff("history", "history", &their_history, &our_history));
            d
        }
    };
    let _ = run(&mut suite.docker(&["rmi", "-f", &ours, &theirs]));
    let show = |topics: &dyn Fn(&str) -> bool| -> String {
        differences
            .iter()
            .filter(|(t, _)| topics(t))
            .map(|(t, text)| format!("[{t}]\n{text}"))
            .collect()
    };
    let known = diverges
        .as_deref()
        .map(|text| diverging_topics(case, text))
        .unwrap_or_default();
    // Unexpected differences fail the case, DIVERGES or not.
    let unexpected = show(&|t| !known.iter().any(|k| k == t));
    let mut found: Vec<&str> = differences.iter().map(|(t, _)| *t).collect();
    found.sort_unstable();
    found.dedup();
    assert!(
        unexpected.is_empty(),
        "{case} ({}): strata and BuildKit differ (topics {found:?}):\n{unexpected}",
        case_dir.display()
    );
    // Each diverging topic must still differ: the day its bug is fixed,
    // the line in DIVERGES must go.
    for topic in &known {
        assert!(
            differences.iter().any(|(t, _)| t == topic),
            "{case} ({}): strata now agrees with BuildKit on {topic}: the bug DIVERGES names is fixed, remove its line:\n{}",
            case_dir.display(),
            diverges.as_deref().unwrap_or_default()
        );
    }
    if !known.is_empty() {
        eprintln!(
            "{case}: still diverges as DIVERGES says:\n{}",
            show(&|_| true)
        );
    }
}

macro_rules! cases {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {
        /// Every case this file runs, to check against the folders.
        const CASES: &[&str] = &[$(stringify!($name)),*];
        $(
            #[test]
            $(#[$attr])*
            fn $name() {
                compat(stringify!($name));
            }
        )*
        /// The second pass (issue 15): every case built with `--isolation
        /// namespaces` and `--isolation chroot` must give one image; see
        /// [`super::isolation_pass`]. Needs no reference builder.
        mod isolation {
            $(
                #[test]
                fn $name() {
                    super::isolation_pass::same_image(stringify!($name));
                }
            )*
        }
    };
}

#[path = "compat/isolation.rs"]
mod isolation_pass;

/// A case folder without a test (or a test without a folder) is a mistake,
/// and so is a harness file that says nothing.
#[test]
fn every_case_folder_has_a_test() {
    let mut folders: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("reading tests/compat/cases")
        .map(|e| {
            e.expect("case folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    folders.sort();
    let mut listed: Vec<String> = CASES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(folders, listed);
    for case in CASES {
        let dir = cases_dir().join(case);
        assert!(dir.join("Dockerfile").is_file(), "{case} has no Dockerfile");
        assert!(
            !dir.join("expected").exists(),
            "{case}: compare with BuildKit, not expected/"
        );
        if let Ok(text) = std::fs::read_to_string(dir.join("DIVERGES")) {
            diverging_topics(case, &text);
        }
        for file in [
            "DIVERGES",
            "SOURCE",
            "DEFAULT_TIMES",
            "BUILD_CONTEXTS",
            "BUILD_FLAGS",
        ] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                assert!(!text.trim().is_empty(), "{case}/{file} is empty");
            }
        }
        // Ported from BuildKit: `SOURCE` names the test (`FILE testName`).
        if case.starts_with("bk_") {
            let source = std::fs::read_to_string(dir.join("SOURCE")).unwrap_or_default();
            let words: Vec<&str> = source.split_whitespace().collect();
            assert!(
                words.len() >= 2 && words[0].ends_with("_test.go") && words[1].starts_with("test"),
                "{case}/SOURCE: want `dockerfile_*_test.go testName`, got {source:?}"
            );
        }
        if dir.join("FAILS").exists() {
            expected_failure(&dir);
        }
    }
}

cases!(
    add_chmod_and_chown,
    add_local_tar,
    add_multiple_with_archive,
    add_not_a_tar,
    add_plain_file,
    add_tar_gz_bz2_xz,
    add_tar_hardlink_header_metadata,
    add_tar_keeps_owners_modes_links,
    add_tar_over_existing_dir,
    add_tar_with_chown,
    add_tar_without_trailing_slash,
    arg_default_expansion,
    arg_in_from,
    arg_stage_default_overrides_global,
    bk_add_invalid_chmod,
    bk_add_invalid_chmod_2,
    bk_all_target_unmarshal,
    bk_base_image_platform_mismatch,
    bk_base_image_platform_mismatch_2,
    bk_cache_import_export,
    bk_cache_mount_default_id,
    bk_cache_mount_mode_no_cache,
    bk_cache_mount_user,
    bk_cache_released,
    bk_cmd_shell,
    bk_cmd_shell_2,
    bk_consistent_instruction_casing,
    bk_consistent_instruction_casing_2,
    bk_consistent_instruction_casing_3,
    bk_consistent_instruction_casing_4,
    bk_consistent_instruction_casing_5,
    bk_consistent_instruction_casing_6,
    bk_consistent_instruction_casing_7,
    bk_consistent_instruction_casing_8,
    bk_consistent_instruction_casing_9,
    bk_copy_chmod,
    bk_copy_follow_all_symlinks,
    bk_copy_heredoc_special_symbols,
    bk_copy_ignored_files,
    bk_copy_ignored_files_2,
    bk_copy_ignored_files_3,
    bk_copy_ignored_files_4,
    bk_copy_invalid_chmod,
    bk_copy_invalid_chmod_2,
    bk_copy_link_dot_dest_dir,
    bk_copy_link_empty_dest_dir,
    bk_copy_override_files,
    bk_copy_relative,
    bk_copy_symlinks,
    bk_copy_through_symlink_context,
    bk_copy_through_symlink_multi_stage,
    bk_copy_var_substitution,
    bk_copy_wildcard_cache,
    bk_copy_wildcards,
    bk_default_shell_and_path,
    bk_definition_description,
    bk_definition_description_2,
    bk_dockerfile_copy_from_args,
    bk_dockerfile_invalid_command,
    bk_dockerfile_invalid_instruction,
    bk_dockerfile_scratch_config,
    bk_dockerignore_invalid,
    bk_duplicate_stage_name,
    bk_duplicate_stage_name_2,
    bk_empty_dest_dir,
    bk_empty_string_arg_in_env,
    bk_empty_wildcard,
    bk_env_empty_formatting,
    bk_exported_history,
    bk_exported_history_flatten_args,
    bk_expose_expansion,
    bk_expose_invalid_format,
    bk_expose_proto_casing,
    bk_heredoc_indent,
    bk_heredoc_var_substitution,
    bk_history_error,
    bk_history_finalize_trace,
    bk_ignore_entrypoint,
    bk_import_export_reproducible_i_ds,
    bk_json_args_recommended,
    bk_json_args_recommended_2,
    bk_json_args_recommended_3,
    bk_json_args_recommended_4,
    bk_json_args_recommended_5,
    bk_json_args_recommended_6,
    bk_labels,
    bk_legacy_key_value_format,
    bk_legacy_key_value_format_2,
    bk_legacy_key_value_format_3,
    bk_legacy_key_value_format_4,
    bk_maintainer_deprecated,
    bk_maintainer_deprecated_2,
    bk_maintainer_deprecated_3,
    bk_maintainer_deprecated_4,
    bk_maintainer_deprecated_5,
    bk_mount_arg,
    bk_mount_context,
    bk_mount_env_across_stages,
    bk_mount_env_var,
    bk_mount_from_error,
    bk_mount_invalid,
    bk_mount_invalid_2,
    bk_mount_invalid_3,
    bk_mount_meta_arg,
    bk_mount_rw_cache,
    bk_mount_tmpfs,
    bk_mount_tmpfs_size,
    bk_multi_nil_refs_oci_exporter,
    bk_multi_stage_implicit_from_2,
    bk_multiple_instructions_disallowed,
    bk_multiple_instructions_disallowed_2,
    bk_multiple_instructions_disallowed_3,
    bk_nil_provenance,
    bk_no_cache,
    bk_no_empty_continuation,
    bk_oci_layout_multiname,
    bk_on_build_cleared,
    bk_on_build_inherited_stage_run,
    bk_on_build_new_deps,
    bk_on_build_with_cache_mount,
    bk_on_build_with_child_stage,
    bk_preserve_dest_dir_slash,
    bk_reproducible_i_ds,
    bk_reserved_stage_name,
    bk_reserved_stage_name_2,
    bk_run_basic_heredoc,
    bk_run_security_default,
    bk_run_security_sandbox,
    bk_secrets_used_in_arg_or_env,
    bk_stage_name,
    bk_stage_name_2,
    bk_step_names,
    bk_tar_exporter_basic,
    bk_unmatched_vars,
    bk_unmatched_vars_2,
    bk_unmatched_vars_3,
    bk_unmatched_vars_4,
    bk_unmatched_vars_5,
    bk_unmatched_vars_6,
    bk_warnings_before_error,
    bk_workdir_creates_dir,
    bk_workdir_relative_path,
    bk_workdir_relative_path_2,
    bk_workdir_relative_path_3,
    case_insensitive_keywords,
    chmod_chown_only_change,
    cmd_after_entrypoint_kept,
    cmd_entrypoint_forms,
    cmd_exec_form_not_expanded,
    cmd_shell_form,
    comments_and_blank_lines,
    copy_backslash_in_source,
    copy_chmod,
    copy_chown_by_name,
    copy_chown_creates_parents,
    copy_chown_dir_tree,
    copy_chown_name_from_group_file,
    copy_chown_numeric,
    copy_chown_with_expansion,
    copy_creates_parents_default_owner,
    copy_dest_expansion,
    copy_dir_contents,
    copy_dir_into_existing,
    copy_dir_modes_from_context,
    copy_dot_context,
    copy_file_into_dir_slash,
    copy_file_rename,
    copy_from_stage_keeps_owner,
    copy_from_stage_symlink_source,
    copy_heredoc_mode,
    copy_hidden_files,
    copy_into_existing_dir_without_slash,
    copy_into_symlinked_dest,
    copy_json_form_and_spaces,
    copy_keeps_modes,
    copy_link,
    copy_link_chmod_or_false_is_plain_copy,
    copy_link_chown_existing_parents,
    copy_multiple_sources,
    copy_over_symlink_file,
    copy_overwrite_file,
    copy_relative_dest_workdir,
    copy_single_file,
    copy_src_trailing_slash,
    copy_symlink_in_context,
    copy_tar_is_not_extracted,
    copy_wildcard_in_subdir,
    copy_wildcard_matching_dirs,
    copy_wildcards,
    deep_tree,
    dockerignore_basic,
    dockerignore_dir_with_exception_deeper,
    dockerignore_dockerfile_itself,
    dockerignore_double_star_and_anchors,
    dockerignore_exceptions,
    dockerignore_ignores_dockerignore_and_dockerfile,
    dockerignore_per_dockerfile,
    dockerignore_wildcard_reinclude,
    empty_run_output_layer,
    entrypoint_resets_cmd,
    entrypoint_shell_form,
    env_and_arg_scoping,
    env_expansion_modifiers,
    env_legacy_form,
    env_overrides_arg,
    env_path_prepend,
    env_reassign_keeps_position,
    env_same_line_no_self_reference,
    env_split_before_expansion,
    env_then_arg_precedence,
    escape_directive,
    expose_volume_stopsignal,
    expose_with_arg,
    file_modes_umask,
    global_arg_not_in_stage,
    hardlink_to_base_file,
    hardlinks_kept,
    healthcheck_cmd,
    healthcheck_none,
    healthcheck_replaced_not_merged,
    heredoc_copy,
    heredoc_run,
    heredoc_shebang_script_path,
    label_expansion,
    label_override_and_quotes,
    labels_and_maintainer,
    multistage_arg_not_inherited,
    multistage_copy_from_image,
    multistage_copy_from_index,
    multistage_copy_from_name,
    named_context_dir,
    named_context_from_dir,
    named_context_image,
    multistage_from_stage,
    multistage_inherits_config,
    multistage_target_unused_stage,
    onbuild_multiple_and_json,
    onbuild_recorded,
    onbuild_triggers_from_stage,
    run_env_visible,
    run_exec_form,
    run_groups_include_primary,
    run_json_fallback,
    run_line_continuations,
    run_mount_bare_word_refused,
    run_mount_bind_context,
    run_mount_bind_from_stage,
    run_mount_cache,
    run_mount_from_index_is_image,
    run_mount_missing_target_touches_parent,
    run_mount_stubs_removed,
    run_mount_tmpfs,
    run_mount_unknown_key_refused,
    run_no_etc_hostname,
    run_ulimit,
    scratch_workdir,
    setuid_and_sticky,
    shell_affects_shell_forms,
    shell_instruction,
    stopsignal_and_expose_ranges,
    symlinks_relative_absolute,
    user_and_workdir_inherit,
    user_by_name_and_id,
    user_uid_gid_numeric,
    user_with_group_name,
    volume_then_run_keeps_changes,
    whiteout_across_steps,
    whiteout_base_dir_emptied,
    whiteout_dir_replaced_by_file,
    whiteout_dir_replaced_by_symlink,
    whiteout_file_delete,
    whiteout_file_replaced_by_dir,
    whiteout_opaque_dir,
    whiteout_symlink_replaced_by_dir,
    whiteout_then_recreate,
    workdir_created_and_relative,
    workdir_existing_unchanged,
    workdir_under_named_user,
    workdir_under_user,
    workdir_with_env,
);
