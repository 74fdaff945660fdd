//! End-to-end tests of the image commands through the real `strata` binary,
//! each on its own store (`STRATA_ROOT` in a temporary directory). Images are
//! made with `strata import` of the busybox fixture and with `strata load` of
//! small archives written here, so shared layers are real shared layers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("store");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        Env {
            _dir: dir,
            root,
            work,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.args(args)
            .env("STRATA_ROOT", &self.root)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("spawn strata")
    }

    /// Runs and asserts success; returns stdout.
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

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect JSON");
        v[0].clone()
    }

    fn blob_count(&self) -> usize {
        std::fs::read_dir(self.root.join("blobs/sha256"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    // The digest crate is strata-oci's; tests use the binary's own view instead
    // where they can, and this only names archive members.
    use std::fmt::Write;
    let d = strata_oci_digest(data);
    let mut s = String::new();
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// sha256 via the system tool (no extra dev-dependency).
fn strata_oci_digest(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let o = c.wait_with_output().expect("sha256sum");
    let hex = String::from_utf8_lossy(&o.stdout);
    let hex = hex.split_whitespace().next().unwrap_or("");
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

/// A layer tar with the given entries: (path, Some(content)) for a file,
/// (path, None) for a directory.
fn layer(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, content) in entries {
        let mut h = tar::Header::new_gnu();
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, p, c.as_bytes()).expect("append");
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                h.set_mtime(1_700_000_000);
                b.append_data(&mut h, p, std::io::empty()).expect("append");
            }
        }
    }
    b.into_inner().expect("tar")
}

/// Writes a docker-archive with one image per (tags, layers) entry; layers
/// are stored by content digest, so shared ones appear once.
fn archive(path: &Path, images: &[(&[&str], &[&[u8]])]) {
    let mut b = tar::Builder::new(Vec::new());
    let mut seen = std::collections::BTreeSet::new();
    let mut manifest = Vec::new();
    let mut add = |b: &mut tar::Builder<Vec<u8>>, name: String, data: &[u8]| {
        if seen.insert(name.clone()) {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, data).expect("append");
        }
    };
    for (i, (tags, layers)) in images.iter().enumerate() {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|l| format!("sha256:{}", sha256_hex(l)))
            .collect();
        let cfg = json!({
            "architecture": "amd64", "os": "linux", "created": format!("2026-01-0{}T00:00:00Z", i + 1),
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": layers.iter().enumerate().map(|(n, _)| json!({"created": "2026-01-01T00:00:00Z", "created_by": format!("step {n}")})).collect::<Vec<_>>(),
        });
        let cfg = serde_json::to_vec(&cfg).expect("json");
        let cfg_name = format!("blobs/sha256/{}", sha256_hex(&cfg));
        add(&mut b, cfg_name.clone(), &cfg);
        let mut lnames = Vec::new();
        for l in layers.iter() {
            let n = format!("blobs/sha256/{}", sha256_hex(l));
            add(&mut b, n.clone(), l);
            lnames.push(n);
        }
        manifest.push(json!({"Config": cfg_name, "RepoTags": tags, "Layers": lnames}));
    }
    add(
        &mut b,
        "manifest.json".into(),
        &serde_json::to_vec(&manifest).expect("json"),
    );
    std::fs::write(path, b.into_inner().expect("tar")).expect("write archive");
}

fn base_layer() -> Vec<u8> {
    layer(&[
        ("etc", None),
        ("etc/motd", Some("hello\n")),
        ("tmp", None),
        ("tmp/junk", Some("x")),
        ("bin", None),
    ])
}

fn child_layer() -> Vec<u8> {
    // Adds /etc/new, changes /etc/motd, deletes /tmp (whiteout).
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in [
        ("etc/motd", "changed\n"),
        ("etc/new", "new\n"),
        (".wh.tmp", ""),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, p, c.as_bytes()).expect("append");
    }
    b.into_inner().expect("tar")
}

#[test]
fn rmi_of_multi_tagged_image_only_untags() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    archive(&a, &[(&["app:1"], &[&base_layer()])]);
    e.ok(&["load", "-i", a.to_str().unwrap_or_default()]);
    e.ok(&["tag", "app:1", "app:2"]);
    e.ok(&["tag", "app:1", "localhost:5000/x/app:3"]);
    let out = e.ok(&["rmi", "app:2"]);
    assert_eq!(out, "Untagged: app:2\n");
    let id = e.inspect("app:1")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let tags = e.inspect(&id)["RepoTags"].clone();
    assert_eq!(tags, json!(["app:1", "localhost:5000/x/app:3"]));
    // By ID with several tags: refused without -f, as docker does.
    let o = e.run(&["rmi", &id[7..19]]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("must be forced"));
    let out = e.ok(&["rmi", "-f", &id[7..19]]);
    assert!(out.contains("Untagged: app:1\n"), "{out}");
    assert!(out.contains("Untagged: localhost:5000/x/app:3\n"), "{out}");
    assert!(out.contains(&format!("Deleted: {id}\n")), "{out}");
    assert_eq!(e.ok(&["images", "-q"]), "");
    assert_eq!(e.blob_count(), 0, "every blob freed");
    e.ok(&["check"]);
}

#[test]
fn rmi_of_base_keeps_layers_a_child_uses() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    let base = base_layer();
    let child = child_layer();
    archive(
        &a,
        &[(&["base:1"], &[&base]), (&["child:1"], &[&base, &child])],
    );
    e.ok(&["load", "-i", a.to_str().unwrap_or_default()]);
    let base_id = e.inspect("base:1")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let out = e.ok(&["rmi", "base:1"]);
    // The image goes, its only layer stays: child:1 still needs it.
    assert_eq!(out, format!("Untagged: base:1\nDeleted: {base_id}\n"));
    let layers = e.inspect("child:1")["RootFS"]["Layers"].clone();
    assert_eq!(layers[0], json!(format!("sha256:{}", sha256_hex(&base))));
    assert!(
        e.root
            .join("blobs/sha256")
            .join(sha256_hex(&base))
            .is_file()
    );
    // And the child's content is all there to read.
    assert_eq!(
        e.ok(&["diff", "child:1"]),
        "C /etc\nC /etc/motd\nA /etc/new\nD /tmp\n"
    );
    assert!(e.ok(&["check"]).contains("0 problem(s)"));
    // Removing the child frees its layers too, shared one included.
    let out = e.ok(&["rmi", "child:1"]);
    assert!(
        out.starts_with("Untagged: child:1\nDeleted: sha256:"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 4, "image + two layer chain IDs: {out}");
    assert_eq!(e.blob_count(), 0);
}

#[test]
fn system_df_counts_shared_layers_once() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    let base = base_layer();
    let child = child_layer();
    archive(
        &a,
        &[(&["base:1"], &[&base]), (&["child:1"], &[&base, &child])],
    );
    e.ok(&["load", "-i", a.to_str().unwrap_or_default()]);
    let total = (base.len() + child.len()) as u64;
    let df = e.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Size}} {{.Reclaimable}}",
    ]);
    let images_line = df.lines().next().unwrap_or_default().to_owned();
    assert_eq!(images_line, format!("Images 2 {} 0B (0%)", human(total)));
    // Untag the child (its tag moves to base): its own layer becomes
    // reclaimable, the shared base layer does not.
    e.ok(&["tag", "base:1", "child:1"]);
    let df = e.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}} {{.TotalCount}} {{.Size}} {{.Reclaimable}}",
    ]);
    let line = df.lines().next().unwrap_or_default().to_owned();
    let pct = child.len() as u64 * 100 / total;
    assert_eq!(
        line,
        format!(
            "Images 2 {} {} ({pct}%)",
            human(total),
            human(child.len() as u64)
        )
    );
    let v = e.ok(&["system", "df", "-v"]);
    assert!(
        v.contains("SHARED SIZE") && v.contains("UNIQUE SIZE"),
        "{v}"
    );
    // The dangling image shows as <none> <none>.
    assert!(
        e.ok(&["images", "--filter", "dangling=true"])
            .contains("<none>")
    );
    // prune removes it and frees exactly its own layer.
    let before = e.blob_count();
    e.ok(&["image", "prune"]);
    assert_eq!(e.blob_count(), before - 3, "config, manifest, child layer");
    assert!(e.ok(&["check"]).contains("0 problem(s)"));
}

/// Docker's `HumanSize` (4 significant digits, decimal units).
fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < 3 {
        v /= 1000.0;
        i += 1;
    }
    let digits = (v.log10().floor() as i64 + 1).max(1) as usize;
    let s = format!("{v:.*}", 4usize.saturating_sub(digits));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{}", units[i])
}

#[test]
fn save_shares_layers_and_load_restores_tags() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    let base = base_layer();
    let child = child_layer();
    archive(
        &a,
        &[(&["base:1"], &[&base]), (&["child:1"], &[&base, &child])],
    );
    e.ok(&["load", "-i", a.to_str().unwrap_or_default()]);
    let ids = (
        e.inspect("base:1")["Id"].clone(),
        e.inspect("child:1")["Id"].clone(),
    );
    let saved = e.work.join("saved.tar");
    e.ok(&[
        "save",
        "base:1",
        "child:1",
        "-o",
        saved.to_str().unwrap_or_default(),
    ]);
    let mut ar = tar::Archive::new(std::fs::File::open(&saved).expect("open"));
    let names: Vec<String> = ar
        .entries()
        .expect("entries")
        .map(|en| {
            en.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string()
        })
        .collect();
    let base_name = format!("blobs/sha256/{}", sha256_hex(&base));
    assert_eq!(
        names.iter().filter(|n| **n == base_name).count(),
        1,
        "shared layer once: {names:?}"
    );
    assert!(
        names.contains(&"manifest.json".to_owned()) && names.contains(&"index.json".to_owned())
    );
    // Load into a fresh store: both images, both tags, same IDs.
    let f = Env::new();
    let out = f.ok(&["load", "-i", saved.to_str().unwrap_or_default()]);
    assert_eq!(out, "Loaded image: base:1\nLoaded image: child:1\n");
    assert_eq!(f.inspect("base:1")["Id"], ids.0);
    assert_eq!(f.inspect("child:1")["Id"], ids.1);
    assert!(f.ok(&["check"]).contains("0 problem(s)"));
}

#[test]
fn import_busybox_with_change_and_history() {
    let Some(bb) = strata_testutil::busybox_tar("import_busybox_with_change_and_history") else {
        return;
    };
    let e = Env::new();
    let id = e.ok(&[
        "import",
        bb.to_str().unwrap_or_default(),
        "bb:1",
        "--change",
        "CMD [\"/bin/sh\", \"-c\", \"echo hi\"]",
        "-c",
        "ENV A=1",
    ]);
    let img = e.inspect("bb:1");
    assert_eq!(img["Id"].as_str().unwrap_or_default(), id.trim());
    assert_eq!(img["Config"]["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
    assert!(
        img["Config"]["Env"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("A=1")))
    );
    let hist = e.ok(&["history", "bb:1"]);
    let mut lines = hist.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("IMAGE          CREATED")
    );
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with(&id.trim()[7..19])
    );
    let images = e.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert_eq!(images, format!("bb:1 {}\n", &id.trim()[7..19]));
    assert_eq!(
        e.ok(&["images", "bb:2"]).lines().count(),
        1,
        "only the header"
    );
}

#[test]
fn check_finds_and_repairs_a_corrupt_blob() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    archive(&a, &[(&["app:1"], &[&base_layer()])]);
    e.ok(&["load", "-i", a.to_str().unwrap_or_default()]);
    let blob = e.root.join("blobs/sha256").join(sha256_hex(&base_layer()));
    std::fs::write(&blob, b"garbage").expect("corrupt");
    let o = e.run(&["check"]);
    assert!(!o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("content has digest"), "{text}");
    e.ok(&["check", "--repair"]);
    assert!(e.ok(&["check"]).contains("0 problem(s)"));
    assert!(
        e.run(&["inspect", "app:1"]).status.code() == Some(1),
        "broken image removed"
    );
}

/// Kills `strata load` and `strata rmi` at random points; afterwards `check`
/// must find nothing wrong and the store must keep working.
#[test]
fn crash_during_load_and_rmi_leaves_a_consistent_store() {
    let e = Env::new();
    let a = e.work.join("a.tar");
    // Big enough layers that load takes a while to kill inside of.
    let big: String = "0123456789abcdef".repeat(1 << 18);
    let base = layer(&[("data", None), ("data/big", Some(&big)), ("etc", None)]);
    let child = layer(&[("data/more", Some(&big[..(1 << 19)]))]);
    archive(
        &a,
        &[(&["base:1"], &[&base]), (&["child:1"], &[&base, &child])],
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let a_s = a.to_str().unwrap_or_default().to_owned();
    let mut interrupted = 0;
    for i in 0..60 {
        let args: Vec<&str> = if i % 2 == 0 {
            vec!["load", "-i", &a_s]
        } else {
            vec!["rmi", "-f", "child:1", "base:1"]
        };
        let mut child_proc = e
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_micros(2_000 + rand(25_000)));
        let _ = child_proc.kill();
        let status = child_proc.wait().expect("wait");
        if std::os::unix::process::ExitStatusExt::signal(&status).is_some() {
            interrupted += 1;
        }
        let o = e.run(&["check"]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(" 0 problem(s)"),
            "iteration {i}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert!(
        interrupted >= 20,
        "only {interrupted} of 60 runs were killed mid-way"
    );
    // The store still works: a full load, then everything listed resolves.
    e.ok(&["load", "-i", &a_s]);
    assert_eq!(
        e.inspect("child:1")["RootFS"]["Layers"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    e.ok(&["rmi", "child:1", "base:1"]);
    e.ok(&["check", "--repair"]);
    assert_eq!(e.blob_count(), 0, "GC after crashes frees every leftover");
}
