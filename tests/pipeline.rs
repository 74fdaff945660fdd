//! The layer pipeline end to end, through the `strata` binary on the
//! busybox fixture: a fully cached rebuild of a multi-stage build with RUN
//! steps, `RUN --mount=from=` and `COPY --from` unpacks nothing, counted
//! from the `[internal] unpacking N layers` progress lines the solver emits
//! for every unpack.

use std::path::{Path, PathBuf};
use std::process::Output;

fn strata() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// The shared store set-up, plus this file's own helpers.
struct Env(strata_testutil::ImportedStore);

impl std::ops::Deref for Env {
    type Target = strata_testutil::ImportedStore;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Env {
    /// A fresh store with the busybox fixture imported.
    fn new(test: &str) -> Option<Self> {
        strata_testutil::ImportedStore::new(test, &strata()).map(Env)
    }

    fn build(&self, ctx: &Path) -> String {
        let out = self.output(&["build", "--progress", "plain", ctx.to_str().unwrap()]);
        assert!(out.status.success(), "build: {}", stderr(&out));
        stderr(&out)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The layers the `[internal] unpacking N layer(s)` lines add up to.
fn layers_unpacked(progress: &str) -> usize {
    progress
        .lines()
        .filter_map(|l| l.split_once("[internal] unpacking ").map(|(_, r)| r))
        .filter_map(|r| r.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

fn summary_count(progress: &str, what: &str) -> usize {
    progress
        .lines()
        .flat_map(|l| l.split(','))
        .find_map(|part| part.trim().strip_prefix(what)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what:?} in: {progress}"))
}

const DOCKERFILE: &str = "\
FROM strata-test/busybox:latest AS build
COPY src /src
RUN mkdir /out && cat /src/a /src/a > /out/twice && echo built > /artifact
FROM strata-test/busybox:latest
RUN --mount=from=build,source=/out,target=/mnt cp /mnt/twice /twice
COPY --from=build /artifact /artifact
";

#[test]
fn a_cached_rebuild_with_run_mount_from_and_copy_from_unpacks_nothing() {
    let Some(env) = Env::new("a_cached_rebuild_with_run_mount_from_and_copy_from_unpacks_nothing")
    else {
        return;
    };
    let ctx = env.dir.join("ctx");
    std::fs::create_dir_all(ctx.join("src")).unwrap();
    std::fs::write(ctx.join("src/a"), "a\n").unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();

    let first = env.build(&ctx);
    // The base's snapshot for the RUN steps, and the build stage's tree for
    // the mount and the COPY --from.
    assert!(layers_unpacked(&first) > 0, "{first}");

    let again = env.build(&ctx);
    assert_eq!(layers_unpacked(&again), 0, "{again}");
    assert_eq!(summary_count(&again, "layers built:"), 0, "{again}");
    assert_eq!(summary_count(&again, "steps run:"), 0, "{again}");

    // Without stored indexes (a store from before they existed) the layers
    // are indexed from their tars: still nothing unpacked.
    std::fs::remove_dir_all(env.root.join("indexes")).unwrap();
    let reindexed = env.build(&ctx);
    assert_eq!(layers_unpacked(&reindexed), 0, "{reindexed}");
    assert!(reindexed.contains("[internal] indexing "), "{reindexed}");
    assert_eq!(summary_count(&reindexed, "steps run:"), 0, "{reindexed}");

    // What the mount reads changes: the build stage's RUN and the RUN with
    // the mount run again; the mounted path is made from the build stage's
    // snapshots (its one file linked), still nothing unpacked.
    std::fs::write(ctx.join("src/a"), "b\n").unwrap();
    let changed = env.build(&ctx);
    assert_eq!(summary_count(&changed, "steps run:"), 2, "{changed}");
    assert_eq!(layers_unpacked(&changed), 0, "{changed}");
    assert!(
        changed.contains("copying 0 files, linking 1 from the source's snapshots"),
        "{changed}"
    );
}

/// A stage whose tree spans several RUN layers: deletions (whiteouts), a
/// directory deleted and made again (opaque), a mode changed in an upper
/// layer, a symlink, hard links, owners. Its last RUN lists `/o` as the
/// kernel's overlayfs shows it to that stage: the answer the copies and
/// the mounts must give.
const LAYERED_SOURCE: &str = r#"
FROM strata-test/busybox:latest AS build
RUN mkdir -p /o/keep /o/gone /o/opq && echo 1 > /o/keep/a && echo 2 > /o/gone/b \
 && echo 3 > /o/opq/old && ln -s keep/a /o/sym && echo h > /o/h1 && ln /o/h1 /o/h2 \
 && chown 5:6 /o/keep/a && chmod 0640 /o/keep/a && echo m > /o/mod
RUN rm -r /o/gone /o/opq && mkdir /o/opq && echo new > /o/opq/new && chmod 0600 /o/mod \
 && echo c > /o/keep/c && mkdir /o/sub && echo s > /o/sub/s && touch -t 197001020304 /o/sub
COPY <<'LIST' /list
cd "$1" && find . -mindepth 1 | sort | while read -r p; do
  stat -c "%n %F %a %u:%g" "$p"
  if [ -L "$p" ]; then readlink "$p"; else stat -c %Y "$p"; fi
  [ -f "$p" ] && md5sum < "$p"
  true
done
LIST
RUN sh /list /o > /want
FROM strata-test/busybox:latest AS copies
COPY --from=build /o /plain/
COPY --from=build --chown=7:8 /o /owned/
COPY --from=build --chmod=0700 /o/keep /moded/
FROM copies AS copies-checked
COPY --from=build /list /want /
RUN --mount=from=build,source=/o,target=/m \
    --mount=from=build,source=/o,target=/w,rw set -e; \
  sh /list /plain > /plain.got; diff /want /plain.got; \
  sed 's/ [0-9]*:[0-9]*$/ 7:8/' /want > /owned.want; sh /list /owned > /owned.got; diff /owned.want /owned.got; \
  [ "$(stat -c '%a' /moded/a /moded/c)" = "$(printf '700\n700')" ]; \
  sh /list /m > /m.got; diff /want /m.got; sh /list /w > /w.got; diff /want /w.got; \
  echo changed > /w/mod; echo changed > /w/keep/a
FROM build AS source-unchanged
RUN sh /list /o > /again && diff /want /again
"#;

/// `COPY --from` reads the source stage's tree from its snapshots, as
/// overlayfs shows it, without unpacking it: the copies equal what the
/// kernel's overlayfs showed a step of that stage, entry by entry (type,
/// mode, owner, mtime, content, link target), and so do the paths a
/// `RUN --mount=from=` mounts. Files whose owner and mode stay are
/// hard-linked from the snapshots, the others copied; a writable mount is
/// all copies, and what a step writes there never reaches the snapshots.
#[test]
fn copy_from_reads_the_source_stage_snapshots_as_overlayfs_shows_them() {
    let Some(env) = Env::new("copy_from_reads_the_source_stage_snapshots_as_overlayfs_shows_them")
    else {
        return;
    };
    let ctx = env.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), LAYERED_SOURCE).unwrap();
    // With an epoch later than now: layer tars clamp mtimes to the epoch,
    // and /want, listed inside the build stage, holds the unclamped ones.
    let build = |flags: &[&str]| {
        let mut args = vec!["build", "--progress", "plain"];
        args.extend(flags);
        args.push(ctx.to_str().unwrap());
        let out = env
            .command(&args)
            .env("SOURCE_DATE_EPOCH", "4000000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "build: {}", stderr(&out));
        stderr(&out)
    };
    let first = build(&["--target", "copies-checked"]);
    // keep/a, keep/c, h1 (h2 is the same inode: a layer holds each inode
    // once), mod, opq/new and sub/s are linked by the plain copy and the
    // read-only mount; the chowned and chmodded copies and the writable
    // mount copy every file. Nothing is unpacked but the base, once.
    let lines = |what: &str| first.lines().filter(|l| l.contains(what)).count();
    assert_eq!(
        lines("copying 1 file, linking 6 from the source's snapshots"),
        2,
        "{first}"
    );
    assert_eq!(lines("copying 7 files"), 2, "{first}");
    assert_eq!(lines("copying 2 files"), 1, "{first}");
    assert_eq!(layers_unpacked(&first), 1, "{first}");
    // What the step wrote through the writable mount reached no snapshot.
    build(&["--target", "source-unchanged"]);
    // Reproducible: the copies' image (mtimes clamped to an earlier epoch)
    // is the same again from scratch.
    let id = |progress: &str| {
        progress
            .lines()
            .find_map(|l| l.split("writing image ").nth(1))
            .map(|s| s.split_whitespace().next().unwrap_or("").to_owned())
            .unwrap_or_else(|| panic!("no image ID in {progress}"))
    };
    let copies = |flags: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "--target", "copies"];
        args.extend(flags);
        args.push(ctx.to_str().unwrap());
        let out = env.output(&args);
        assert!(out.status.success(), "build: {}", stderr(&out));
        id(&stderr(&out))
    };
    // (Both --no-cache: the build stage's cached layers were written under
    // the other epoch, which is not part of a step's cache key.)
    assert_eq!(copies(&["--no-cache"]), copies(&["--no-cache"]));
}
