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
    // the mount run again; the mount's source is materialised for it.
    std::fs::write(ctx.join("src/a"), "b\n").unwrap();
    let changed = env.build(&ctx);
    assert_eq!(summary_count(&changed, "steps run:"), 2, "{changed}");
    assert!(layers_unpacked(&changed) > 0, "{changed}");
}
