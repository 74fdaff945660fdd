//! The compat cases in both isolations (issue 15): every case is built by
//! strata twice from the same context, at once, each in a fresh store, with
//! `--isolation namespaces` and with `--isolation chroot` (what an
//! unprivileged container allows), and the two must be one image (the same
//! image ID). No reference builder is
//! needed: the namespaces build is the reference here, and the first pass
//! compares it with BuildKit.
//!
//! - A case that needs what a chroot cannot give ([`beyond_chroot`], read
//!   from its Dockerfile: `RUN --network=none`, a step reading the live
//!   `/proc` of its own process or mount table) is built in chroot too, and
//!   must *not* give the namespaces image: the day chroot provides it, the
//!   test fails and the rule must go.
//! - A case whose namespaces build is not reproducible (it writes
//!   `/dev/urandom` bytes; found by a second namespaces build, never by a
//!   list) cannot have one ID: there, every layer entry that two namespaces
//!   builds agree on must be the same in the chroot build, and the entries
//!   they disagree on must differ in their content only, as they do between
//!   the namespaces builds; the config must be the same.
//! - A case that fails (`FAILS`, or `DIVERGES` naming `build`: strata fails
//!   on purpose) must fail in both, at the line `FAILS` names.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use sha2::{Digest as _, Sha256};

use super::{
    BASE, BuildResult, SOURCE_DATE_EPOCH, Times, build_args, build_contexts, build_flags,
    cases_dir, expected_failure, finished, materialize, names_line, ok, run, strata,
};

/// What a case needs that `--isolation chroot` cannot give, from its
/// Dockerfile: `None` when it needs nothing beyond a chroot. The rules are
/// checked both ways by [`same_image`] (an exempt case must still differ).
pub(super) fn beyond_chroot(dockerfile: &str) -> Option<&'static str> {
    // Words of the whole file, continuations and heredoc bodies included:
    // a RUN's shell words and its flags.
    let words: Vec<&str> = dockerfile
        .split(|c: char| c.is_whitespace() || matches!(c, '|' | ';' | '&' | '(' | ')' | '"'))
        .filter(|w| !w.is_empty() && *w != "\\")
        .collect();
    let network_none = words.windows(2).any(|w| {
        w[0].eq_ignore_ascii_case("--network=none")
            || (w[0].eq_ignore_ascii_case("--network") && w[1] == "none")
    });
    if network_none {
        return Some(
            "RUN --network=none needs a network namespace of its own, which a chroot cannot create",
        );
    }
    let live_proc = words
        .iter()
        .any(|w| w.contains("/proc/self") || w.contains("/proc/mounts") || *w == "mount");
    if live_proc {
        return Some(
            "a step reads its own process's /proc (/proc/self, the mount table): a chroot has \
             only static copies of the machine's /proc files, no procfs",
        );
    }
    None
}

/// A store of one build's own with the base imported: builds share
/// nothing, not even a cache mount's contents (a step that counts a
/// cache's entries would see the other build's).
fn store_with_base(dir: &Path, name: &str, busybox: &Path) -> std::path::PathBuf {
    let root = dir.join(name);
    // At a fixed date, so that every store's base is one image.
    ok(Command::new(strata())
        .env("STRATA_ROOT", &root)
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH.to_string())
        .args([
            "import",
            busybox.to_str().expect("STRATA_TEST_BUSYBOX_TAR is UTF-8"),
            BASE,
        ]));
    root
}

/// The image ID, or the build's error output.
type Built = Result<String, String>;

/// One build of `ctx` in `root` with `isolation`, its image ID written to
/// `iid` (unique per build).
fn build_once(
    root: &Path,
    ctx: &Path,
    isolation: &str,
    iid: &Path,
    args: &[String],
    times: Times,
) -> Built {
    let mut cmd = Command::new(strata());
    match times.epoch {
        Some(e) => cmd.env("SOURCE_DATE_EPOCH", e.to_string()),
        None => cmd.env_remove("SOURCE_DATE_EPOCH"),
    };
    // `--no-cache`, as the first pass builds: every step runs.
    let done: BuildResult = finished(run(cmd
        .env("STRATA_ROOT", root)
        .args([
            "build",
            "--no-cache",
            "-q",
            "--isolation",
            isolation,
            "--iidfile",
        ])
        .arg(iid)
        .args(args)
        .arg(ctx)));
    done?;
    let id = std::fs::read_to_string(iid).map_err(|e| format!("{}: {e}", iid.display()))?;
    Ok(id.trim().to_owned())
}

pub(super) fn same_image(case: &str) {
    let test = format!("compat::isolation::{case}");
    if !strata_testutil::require_root(&test) {
        return;
    }
    let Some(busybox) = strata_testutil::busybox_tar(&test) else {
        return;
    };
    let case_dir = cases_dir().join(case);
    let dockerfile = std::fs::read_to_string(case_dir.join("Dockerfile"))
        .unwrap_or_else(|e| panic!("{case}/Dockerfile: {e}"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir(&ctx).expect("context directory");
    let times = Times::of(case, case_dir.join("DEFAULT_TIMES").exists());
    materialize(&case_dir, &ctx, times);
    let mut args = build_args(&case_dir);
    args.extend(build_contexts(&case_dir, &ctx));
    args.extend(build_flags(&case_dir));
    // Each build in a store of its own, which holds its image afterwards.
    let build = |isolation: &str, n: u32| {
        let store = format!("store-{isolation}-{n}");
        let root = store_with_base(dir.path(), &store, &busybox);
        let iid = dir.path().join(format!("iid-{isolation}-{n}"));
        (build_once(&root, &ctx, isolation, &iid, &args, times), root)
    };
    let ((namespaces, ns_root), (chroot, ch_root)) = std::thread::scope(|s| {
        let ns = s.spawn(|| build("namespaces", 1));
        let ch = build("chroot", 1);
        match ns.join() {
            Ok(ns) => (ns, ch),
            Err(e) => std::panic::resume_unwind(e),
        }
    });

    if let Some(reason) = beyond_chroot(&dockerfile) {
        assert!(
            chroot.is_err() || chroot != namespaces,
            "{case}: chroot now gives the namespaces image, though the case {reason}: \
             change the rule in beyond_chroot (tests/compat/isolation.rs)"
        );
        eprintln!("{case}: not compared in chroot: the case {reason}");
        return;
    }

    let fails = expected_failure(&case_dir);
    let strata_refuses = std::fs::read_to_string(case_dir.join("DIVERGES"))
        .is_ok_and(|d| d.lines().any(|l| l.trim_start().starts_with("build:")));
    match (namespaces, chroot) {
        (Err(ns), Err(ch)) => {
            assert!(
                fails.is_some() || strata_refuses,
                "{case}: both builds failed (no FAILS, no DIVERGES build:):\n{ns}"
            );
            if let Some(f) = fails {
                assert!(names_line(&ns, f), "{case}: namespaces error:\n{ns}");
                assert!(names_line(&ch, f), "{case}: chroot error:\n{ch}");
            }
        }
        (Ok(id), Err(e)) => panic!("{case}: namespaces built {id}, chroot failed:\n{e}"),
        (Err(e), Ok(id)) => panic!("{case}: chroot built {id}, namespaces failed:\n{e}"),
        (Ok(ns), Ok(ch)) if ns == ch => {}
        (Ok(ns), Ok(ch)) => {
            let (again, again_root) = build("namespaces", 2);
            let again = again
                .unwrap_or_else(|e| panic!("{case}: the second namespaces build failed:\n{e}"));
            let ns_image = Image::read(&ns_root, &ns);
            let ch_image = Image::read(&ch_root, &ch);
            let unstable = if again == ns {
                Vec::new()
            } else {
                ns_image.differences(&Image::read(&again_root, &again), &[])
            };
            assert!(
                again != ns,
                "{case}: chroot gave {ch}, namespaces {ns} (twice):\n{}",
                show(&ns_image.differences(&ch_image, &[]))
            );
            let differ = ns_image.differences(&ch_image, &unstable);
            assert!(
                differ.is_empty(),
                "{case}: chroot and namespaces differ beyond what two namespaces builds do:\n{}",
                show(&differ)
            );
            eprintln!(
                "{case}: compared entry by entry: two namespaces builds differ, the chroot build \
                 only where they do:\n{}",
                show(&unstable)
            );
        }
    }
}

/// An image as the store holds it: its config (less the layer digests) and
/// each layer's entries.
struct Image {
    config: String,
    layers: Vec<BTreeMap<String, Entry>>,
}

/// A layer entry: what it is (type, mode, owner, mtime, link, xattrs), and
/// its content (size and sha256), kept apart so that content alone can be
/// let differ.
#[derive(PartialEq)]
struct Entry {
    meta: String,
    content: String,
}

impl Image {
    /// Reads image `id` from the store at `root` (`blobs/sha256/<hex>`:
    /// the config, and the layers as plain tars, gzip for imported ones).
    fn read(root: &Path, id: &str) -> Image {
        let blob = |digest: &str| {
            let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
            let path = root.join("blobs/sha256").join(hex);
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut config: serde_json::Value =
            serde_json::from_slice(&blob(id)).expect("the image config is JSON");
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(rootfs) = config.get_mut("rootfs") {
            rootfs["diff_ids"] = serde_json::Value::Null;
        }
        let layers = diff_ids.iter().map(|d| entries(&blob(d))).collect();
        Image {
            config: serde_json::to_string_pretty(&config).expect("JSON"),
            layers,
        }
    }

    /// What differs from `other`. A difference `allowed` has (the same
    /// key, and content only when that is all it had there) is left out.
    fn differences(&self, other: &Image, allowed: &[Difference]) -> Vec<Difference> {
        let mut out = Vec::new();
        if self.config != other.config {
            out.push(Difference {
                key: "config".into(),
                content_only: false,
                text: format!(
                    "    namespaces: {}\n    other:      {}\n",
                    self.config, other.config
                ),
            });
        }
        if self.layers.len() != other.layers.len() {
            out.push(Difference {
                key: "layers".into(),
                content_only: false,
                text: format!("    {} against {}\n", self.layers.len(), other.layers.len()),
            });
            return out;
        }
        let entry = |e: Option<&Entry>| {
            e.map_or("(none)".to_owned(), |e| format!("{} {}", e.meta, e.content))
        };
        for (n, (a, b)) in self.layers.iter().zip(&other.layers).enumerate() {
            let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for path in paths {
                let (x, y) = (a.get(path), b.get(path));
                if x == y {
                    continue;
                }
                let d = Difference {
                    key: format!("layer {n} {path}"),
                    content_only: x.zip(y).is_some_and(|(x, y)| x.meta == y.meta),
                    text: format!(
                        "    namespaces: {}\n    other:      {}\n",
                        entry(x),
                        entry(y)
                    ),
                };
                let excused = allowed
                    .iter()
                    .any(|u| u.key == d.key && (d.content_only || !u.content_only));
                if !excused {
                    out.push(d);
                }
            }
        }
        out
    }
}

/// One difference between two images.
struct Difference {
    /// `config`, `layers`, or `layer N PATH`.
    key: String,
    /// Whether an entry differs in its content only.
    content_only: bool,
    text: String,
}

fn show(differences: &[Difference]) -> String {
    differences
        .iter()
        .map(|d| format!("  {}\n{}", d.key, d.text))
        .collect()
}

/// A layer tar's entries by path.
fn entries(blob: &[u8]) -> BTreeMap<String, Entry> {
    let plain: Box<dyn Read + '_> = if blob.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(blob))
    } else {
        Box::new(blob)
    };
    let mut out = BTreeMap::new();
    let mut archive = tar::Archive::new(plain);
    for entry in archive.entries().expect("a layer is a tar") {
        let mut entry = entry.expect("layer entry");
        let path = entry.path().expect("entry path").display().to_string();
        let h = entry.header().clone();
        let link = entry
            .link_name()
            .ok()
            .flatten()
            .map(|l| format!(" -> {}", l.display()))
            .unwrap_or_default();
        let mut xattrs = String::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                if let Ok(k) = ext.key()
                    && k.starts_with("SCHILY.xattr.")
                {
                    xattrs.push_str(&format!(" {k}={:?}", ext.value_bytes()));
                }
            }
        }
        let meta = format!(
            "{:?} {:o} {}:{} t={}{link}{xattrs}",
            h.entry_type(),
            h.mode().unwrap_or(0),
            h.uid().unwrap_or(u64::MAX),
            h.gid().unwrap_or(u64::MAX),
            h.mtime().unwrap_or(0),
        );
        let mut data = Vec::new();
        entry.read_to_end(&mut data).expect("layer entry data");
        let content = format!("{} bytes sha256:{:x}", data.len(), Sha256::digest(&data));
        out.insert(path, Entry { meta, content });
    }
    out
}

#[test]
fn what_chroot_cannot_give_is_read_from_the_dockerfile() {
    for (dockerfile, beyond) in [
        ("FROM a\nRUN --network=none true\n", true),
        ("FROM a\nRUN --network none true\n", true),
        ("FROM a\nRUN --network=host true\n", false),
        ("FROM a\nRUN cat /proc/self/status\n", true),
        ("FROM a\nRUN x && \\\n  mount | grep shm\n", true),
        (
            "FROM a\nRUN --mount=type=tmpfs,target=/t cat /proc/cpuinfo\n",
            false,
        ),
    ] {
        assert_eq!(beyond_chroot(dockerfile).is_some(), beyond, "{dockerfile}");
    }
}
