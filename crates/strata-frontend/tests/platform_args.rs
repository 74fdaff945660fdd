//! The predefined platform ARGs in FROM lines, as BuildKit defines them
//! (Dockerfile reference, "Automatic platform ARGs in the global scope").

use std::collections::BTreeMap;

use strata_frontend::{BuildInputs, parse, stages};

fn inputs(build_args: BTreeMap<String, String>) -> BuildInputs {
    BuildInputs {
        build_args,
        build_platform: "linux/amd64".parse().unwrap(),
        target_platform: "linux/arm/v7".parse().unwrap(),
    }
}

#[test]
fn platform_args_have_buildkits_names_and_values() {
    let a: BTreeMap<String, String> = inputs(BTreeMap::new())
        .platform_args()
        .into_iter()
        .collect();
    assert_eq!(a["BUILDPLATFORM"], "linux/amd64");
    assert_eq!(a["BUILDOS"], "linux");
    assert_eq!(a["BUILDARCH"], "amd64");
    assert_eq!(a["BUILDVARIANT"], "");
    assert_eq!(a["TARGETPLATFORM"], "linux/arm/v7");
    assert_eq!(a["TARGETOS"], "linux");
    assert_eq!(a["TARGETARCH"], "arm");
    assert_eq!(a["TARGETVARIANT"], "v7");
}

#[test]
fn from_lines_see_them_without_a_declaration() {
    let df = parse(
        "FROM --platform=$BUILDPLATFORM golang:1-$TARGETARCH AS build\nFROM base-${TARGETOS}\n",
        "Dockerfile",
    )
    .unwrap();
    let (_, stages) = stages(&df, &inputs(BTreeMap::new())).unwrap();
    assert_eq!(stages[0].base, "golang:1-arm");
    assert_eq!(
        stages[0]
            .platform
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("linux/amd64")
    );
    assert_eq!(stages[1].base, "base-linux");
}

#[test]
fn a_global_arg_still_wins_over_nothing_and_build_args_over_defaults() {
    let df = parse("ARG V=1\nFROM img:$V-$TARGETARCH\n", "Dockerfile").unwrap();
    let (_, s) = stages(&df, &inputs(BTreeMap::new())).unwrap();
    assert_eq!(s[0].base, "img:1-arm");
    let args = BTreeMap::from([("V".to_owned(), "2".to_owned())]);
    let (_, s) = stages(&df, &inputs(args)).unwrap();
    assert_eq!(s[0].base, "img:2-arm");
}

#[test]
fn proxy_args_are_the_documented_set() {
    // BuildKit matches them case-insensitively (`proxyEnvFromBuildArgs`).
    for k in [
        "HTTP_PROXY",
        "https_proxy",
        "NO_PROXY",
        "all_proxy",
        "FTP_PROXY",
        "Http_Proxy",
    ] {
        assert!(strata_frontend::is_proxy_arg(k), "{k}");
    }
    assert_eq!(strata_frontend::PROXY_ARGS.len(), 5);
}
