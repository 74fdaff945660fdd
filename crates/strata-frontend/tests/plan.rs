//! The `strata build --print` text: stages, edges, levels, pruning, and
//! instructions expanded only where the reference expands them.

use std::collections::BTreeMap;

use strata_frontend::{BuildInputs, graph, parse, render_plan, stages};

fn plan(src: &str, target: Option<&str>, args: &[(&str, &str)]) -> String {
    let df = parse(src, "Dockerfile").unwrap();
    let map: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let inputs = BuildInputs {
        build_args: map,
        build_platform: "linux/amd64".parse().unwrap(),
        target_platform: "linux/amd64".parse().unwrap(),
    };
    let (global, st) = stages(&df, &inputs).unwrap();
    let g = graph(&df, &st, target).unwrap();
    let base_env = |name: &str| (name == "known").then(|| vec!["HOME=/root".to_owned()]);
    render_plan(&df, &global, &st, &g, &inputs, &base_env, &|_| None).unwrap()
}

const MULTI: &str = "\
ARG VERSION=1.0
FROM known AS build
ARG VERSION
ENV OUT=$HOME/out-$VERSION
WORKDIR ${OUT}
RUN --mount=type=cache,target=/c/$VERSION make V=$VERSION
FROM unknown AS test
RUN make test
FROM scratch
COPY --from=build /root/out-${VERSION} /app
CMD [\"/app\"]
";

#[test]
fn plan_lists_stages_levels_and_pruning() {
    let p = plan(MULTI, None, &[]);
    assert!(
        p.contains("target stage stage-2 (#2), 2 of 3 stages needed"),
        "{p}"
    );
    assert!(p.contains("  #0 build: FROM image known [level 0]"), "{p}");
    assert!(
        p.contains("  #1 test: FROM image unknown [pruned by --target]"),
        "{p}"
    );
    assert!(
        p.contains("      reads stage build (COPY --from, line 10)"),
        "{p}"
    );
    assert!(p.contains("  level 0: build\n  level 1: stage-2\n"), "{p}");
    assert!(p.contains("pruned by --target: test\n"), "{p}");
}

#[test]
fn plan_expands_arg_env_workdir_and_mounts_but_not_run_text() {
    let p = plan(MULTI, None, &[("VERSION", "2")]);
    assert!(p.contains("     3  ARG VERSION=2\n"), "{p}");
    assert!(p.contains("     4  ENV OUT=/root/out-2\n"), "{p}");
    assert!(p.contains("     5  WORKDIR /root/out-2\n"), "{p}");
    assert!(
        p.contains("     6  RUN --mount=type=cache,target=/c/2 make V=$VERSION\n"),
        "{p}"
    );
    // The final stage declares no ARG VERSION: it expands to nothing.
    assert!(
        p.contains("    10  COPY --from=build /root/out- /app\n"),
        "{p}"
    );
    assert!(p.contains("    11  CMD [\"/app\"]\n"), "{p}");
}

#[test]
fn plan_says_when_a_base_env_is_unknown() {
    let p = plan(MULTI, Some("test"), &[]);
    assert!(
        p.contains("(the ENV of image unknown is unknown: not in the local store)"),
        "{p}"
    );
    assert!(p.contains("pruned by --target: build, stage-2\n"), "{p}");
}

#[test]
fn plan_is_deterministic() {
    assert_eq!(plan(MULTI, None, &[]), plan(MULTI, None, &[]));
}

#[test]
fn plan_inherits_env_from_a_base_stage() {
    let p = plan(
        "FROM scratch AS a\nENV X=1\nFROM a\nLABEL x=$X\n",
        None,
        &[],
    );
    assert!(p.contains("     4  LABEL x=1\n"), "{p}");
}

/// The whole text for a small file, as a reviewed snapshot: a change to the
/// format shows up here in full.
#[test]
fn plan_full_text() {
    let p = plan(
        "ARG TAG=1\nFROM known AS a\nENV X=$HOME\nFROM scratch AS b\nFROM a\nCOPY --from=b /x ${X}/y\n",
        None,
        &[],
    );
    let want = "\
plan for Dockerfile: target stage stage-2 (#2), 3 of 3 stages needed
platforms: build linux/amd64, target linux/amd64

global args:
  BUILDPLATFORM=linux/amd64
  BUILDOS=linux
  BUILDARCH=amd64
  BUILDVARIANT=\"\"
  TARGETPLATFORM=linux/amd64
  TARGETOS=linux
  TARGETARCH=amd64
  TARGETVARIANT=\"\"
  TAG=1

stages:
  #0 a: FROM image known [level 0]
  #1 b: FROM image scratch [level 0]
  #2 stage-2: FROM stage a [level 1]
      reads stage b (COPY --from, line 6)

parallel levels (stages of one level run at once):
  level 0: a, b
  level 1: stage-2
pruned by --target: none

stage #0 a:
     2  FROM known AS a
     3  ENV X=/root

stage #1 b:
     4  FROM scratch AS b

stage #2 stage-2:
     5  FROM a
     6  COPY --from=b /x /root/y
";
    assert_eq!(p, want);
}
