//! ARG scope and the stage graph, from the Dockerfile reference ("Scope",
//! "Using ARG variables", "Predefined ARGs", "Automatic platform ARGs in the
//! global scope", "Understand how ARG and FROM interact", multi-stage
//! builds) and BuildKit's dockerfile2llb where the reference is silent.

use std::collections::BTreeMap;

use strata_frontend::{
    BuildInputs, Dockerfile, EdgeKind, GlobalScope, Graph, Platform, Source, Stage, StageScope,
    graph, parse, stages,
};

fn df(src: &str) -> Dockerfile {
    parse(src, "Dockerfile").unwrap_or_else(|d| panic!("{}", d.render()))
}

fn inputs(args: &[(&str, &str)]) -> BuildInputs {
    let map: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    BuildInputs {
        build_args: map,
        build_platform: "linux/amd64".parse().unwrap(),
        target_platform: "linux/amd64".parse().unwrap(),
    }
}

fn split(src: &str, args: &[(&str, &str)]) -> (GlobalScope, Vec<Stage>) {
    let d = df(src);
    stages(&d, &inputs(args)).unwrap_or_else(|e| panic!("{}", e.render()))
}

fn split_err(src: &str) -> String {
    let d = df(src);
    match stages(&d, &inputs(&[])) {
        Ok(_) => panic!("{src:?} was accepted"),
        Err(e) => e.message,
    }
}

fn graph_of(src: &str, target: Option<&str>) -> Result<Graph, String> {
    let d = df(src);
    let (_, st) = stages(&d, &inputs(&[])).map_err(|e| e.message)?;
    graph(&d, &st, target).map_err(|e| e.message)
}

/// Runs every ARG of the last stage through a StageScope; returns it and
/// the history lines.
fn stage_args(src: &str, args: &[(&str, &str)]) -> (StageScope, Vec<String>) {
    let d = df(src);
    let inp = inputs(args);
    let (global, st) = stages(&d, &inp).unwrap();
    let mut scope = StageScope::new();
    let mut history = Vec::new();
    let Some(last) = st.last() else {
        panic!("no stage")
    };
    for ins in &last.instructions {
        if ins.keyword == "arg" {
            history.push(
                scope
                    .declare(ins, &global, &inp, &|_| None, d.escape)
                    .unwrap(),
            );
        }
    }
    (scope, history)
}

// Global scope and FROM.

#[test]
fn global_arg_expands_in_from() {
    let (_, st) = split("ARG V=3.19\nFROM alpine:$V\n", &[]);
    assert_eq!(st[0].base, "alpine:3.19");
}

#[test]
fn build_arg_overrides_global_default() {
    let (_, st) = split("ARG V=3.19\nFROM alpine:${V}\n", &[("V", "edge")]);
    assert_eq!(st[0].base, "alpine:edge");
}

#[test]
fn global_default_sees_earlier_global_args() {
    let (g, _) = split("ARG A=x\nARG B=${A}y\nFROM s\n", &[]);
    assert_eq!(g.lookup("B").as_deref(), Some("xy"));
}

#[test]
fn platform_args_usable_in_from_without_declaration() {
    let (_, st) = split("FROM img-$TARGETARCH-$TARGETOS\n", &[]);
    assert_eq!(st[0].base, "img-amd64-linux");
}

#[test]
fn from_platform_flag_expands_buildplatform() {
    let (_, st) = split("FROM --platform=$BUILDPLATFORM golang AS b\n", &[]);
    assert_eq!(st[0].platform, Some("linux/amd64".parse().unwrap()));
}

#[test]
fn build_arg_overrides_a_platform_arg() {
    let (g, _) = split("FROM s\n", &[("TARGETARCH", "riscv64")]);
    assert_eq!(g.lookup("TARGETARCH").as_deref(), Some("riscv64"));
}

#[test]
fn platform_args_have_the_documented_values() {
    let inp = BuildInputs {
        build_args: BTreeMap::new(),
        build_platform: "linux/amd64".parse().unwrap(),
        target_platform: "linux/arm/v7".parse().unwrap(),
    };
    let d = df("FROM s\n");
    let (g, _) = stages(&d, &inp).unwrap();
    let get = |k: &str| g.lookup(k).unwrap();
    assert_eq!(get("BUILDPLATFORM"), "linux/amd64");
    assert_eq!(get("BUILDOS"), "linux");
    assert_eq!(get("BUILDARCH"), "amd64");
    assert_eq!(get("BUILDVARIANT"), "");
    assert_eq!(get("TARGETPLATFORM"), "linux/arm/v7");
    assert_eq!(get("TARGETOS"), "linux");
    assert_eq!(get("TARGETARCH"), "arm");
    assert_eq!(get("TARGETVARIANT"), "v7");
}

#[test]
fn redeclared_global_platform_arg_without_value_is_unset() {
    // docker/buildx#574: `ARG TARGETARCH` before FROM hides the value.
    let (g, _) = split("ARG TARGETARCH\nFROM s\n", &[]);
    assert_eq!(g.get("TARGETARCH"), Some(None));
    assert_eq!(g.lookup("TARGETARCH").as_deref(), Some(""));
}

#[test]
fn empty_base_name_is_refused() {
    assert!(split_err("ARG B\nFROM $B\n").contains("base name ($B) should not be blank"));
}

#[test]
fn empty_platform_is_refused() {
    assert!(split_err("ARG P\nFROM --platform=$P s\n").contains("empty platform value"));
}

#[test]
fn bad_platform_is_refused() {
    assert!(split_err("FROM --platform=nonsense s\n").contains("failed to parse platform"));
}

#[test]
fn only_arg_may_precede_from() {
    assert!(split_err("ENV A=1\nFROM s\n").contains("only ARG may precede FROM"));
}

#[test]
fn no_from_is_refused() {
    assert!(split_err("ARG A\n").contains("no FROM instruction"));
}

#[test]
fn from_needs_one_or_three_words() {
    assert!(split_err("FROM a b\n").contains("one or three arguments"));
}

#[test]
fn stage_names_are_case_insensitive() {
    let (_, st) = split("FROM s AS Builder\n", &[]);
    assert_eq!(st[0].name.as_deref(), Some("builder"));
}

#[test]
fn duplicate_stage_names_are_refused() {
    assert!(split_err("FROM a AS x\nFROM b AS X\n").contains("duplicate stage name \"x\""));
}

#[test]
fn invalid_stage_name_is_refused() {
    assert!(split_err("FROM a AS 1st\n").contains("invalid name for build stage"));
}

// Stage scope.

#[test]
fn stage_arg_without_default_inherits_global_value() {
    let (s, h) = stage_args("ARG V=1\nFROM s\nARG V\n", &[]);
    assert_eq!(s.get("V").as_deref(), Some("1"));
    assert_eq!(h, vec!["ARG V=1"]);
}

#[test]
fn global_arg_not_visible_in_stage_without_redeclaration() {
    let (s, _) = stage_args("ARG V=1\nFROM s\nARG OTHER\n", &[]);
    assert_eq!(s.get("V"), None);
}

#[test]
fn platform_arg_needs_redeclaration_in_stage() {
    let (s, h) = stage_args("FROM s\nARG TARGETARCH\n", &[]);
    assert_eq!(s.get("TARGETARCH").as_deref(), Some("amd64"));
    assert_eq!(h, vec!["ARG TARGETARCH=amd64"]);
    let (s, _) = stage_args("FROM s\nARG X\n", &[]);
    assert_eq!(s.get("TARGETOS"), None);
}

#[test]
fn stage_default_beats_global_value() {
    let (s, _) = stage_args("ARG V=1\nFROM s\nARG V=2\n", &[]);
    assert_eq!(s.get("V").as_deref(), Some("2"));
}

#[test]
fn build_arg_beats_stage_default() {
    let (s, h) = stage_args("FROM s\nARG V=2\n", &[("V", "9")]);
    assert_eq!(s.get("V").as_deref(), Some("9"));
    assert_eq!(h, vec!["ARG V=9"]);
}

#[test]
fn arg_without_value_anywhere_is_unset() {
    let (s, h) = stage_args("FROM s\nARG V\n", &[]);
    assert_eq!(s.get("V"), None);
    assert!(s.env().is_empty());
    assert_eq!(h, vec!["ARG V"]);
}

#[test]
fn stage_default_sees_earlier_stage_args() {
    let (s, _) = stage_args("FROM s\nARG A=x\nARG B=${A}-y\n", &[]);
    assert_eq!(s.get("B").as_deref(), Some("x-y"));
}

#[test]
fn arg_scope_ends_with_the_stage() {
    let (s, _) = stage_args("FROM s AS a\nARG V=1\nFROM s AS b\nARG W=2\n", &[]);
    assert_eq!(s.get("V"), None);
    assert_eq!(s.get("W").as_deref(), Some("2"));
}

#[test]
fn env_of_run_lists_each_arg_once_with_last_value() {
    let (s, _) = stage_args("FROM s\nARG A=1 B=2\nARG A=3\n", &[]);
    assert_eq!(
        s.env(),
        vec![("A".into(), "3".into()), ("B".into(), "2".into())]
    );
}

#[test]
fn run_history_prefix_counts_every_declaration() {
    let (s, _) = stage_args("FROM s\nARG A=1 B\n", &[]);
    assert_eq!(s.history_prefix(&|_| None), "|2 A=1 B=");
    // ENV of the same name is what the step sees, so history shows it.
    assert_eq!(
        s.history_prefix(&|k| (k == "A").then(|| "env".to_owned())),
        "|2 A=env B="
    );
}

#[test]
fn run_history_prefix_names_each_arg_once() {
    // runCommandString: a re-declared name keeps its first place and shows
    // its last value.
    let (s, _) = stage_args("FROM s\nARG foo=bar bar=123\nARG foo=bar2\n", &[]);
    assert_eq!(s.history_prefix(&|_| None), "|2 foo=bar2 bar=123");
}

#[test]
fn an_arg_after_an_env_of_its_name_wins_in_the_step_environment() {
    let (mut s, _) = stage_args("FROM s\nARG V=arg W=w\n", &[]);
    let image_env = vec!["PATH=/bin".to_owned(), "V=env".to_owned()];
    let env = |k: &str| strata_frontend::env_get(&image_env, k);
    assert_eq!(s.lookup(&env, "V").as_deref(), Some("arg"));
    assert_eq!(s.step_env(&image_env), ["PATH=/bin", "V=arg", "W=w"]);
    // An ENV of that name afterwards wins again.
    s.env_set("V");
    assert_eq!(s.lookup(&env, "V").as_deref(), Some("env"));
    assert_eq!(s.step_env(&image_env), ["PATH=/bin", "V=env", "W=w"]);
}

// Proxy build args.

#[test]
fn proxy_args_reach_run_in_both_cases() {
    let inp = inputs(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "local")]);
    assert_eq!(
        inp.proxy_env(),
        vec![
            "HTTPS_PROXY=http://p:1",
            "https_proxy=http://p:1",
            "NO_PROXY=local",
            "no_proxy=local"
        ]
    );
}

#[test]
fn other_build_args_are_not_proxies() {
    assert!(
        inputs(&[("PROXY", "x"), ("HTTP_PROXY_X", "y")])
            .proxy_env()
            .is_empty()
    );
    assert!(strata_frontend::is_proxy_arg("All_Proxy"));
    assert!(!strata_frontend::is_proxy_arg("SOCKS_PROXY"));
}

#[test]
fn undeclared_proxy_arg_is_not_a_stage_arg() {
    let (s, _) = stage_args("FROM s\nARG X=1\n", &[("HTTP_PROXY", "http://p")]);
    assert_eq!(s.get("HTTP_PROXY"), None);
    assert_eq!(s.history_prefix(&|_| None), "|1 X=1");
}

// Platforms.

#[test]
fn platform_names_are_normalised() {
    let p: Platform = "linux/x86_64".parse().unwrap();
    assert_eq!(p.to_string(), "linux/amd64");
    let p: Platform = "Linux/aarch64/v8".parse().unwrap();
    assert_eq!(p.to_string(), "linux/arm64");
    let p: Platform = "linux/arm".parse().unwrap();
    assert_eq!(p.to_string(), "linux/arm/v7");
    assert!("linux".parse::<Platform>().is_err());
    assert!("linux//amd64".parse::<Platform>().is_err());
}

// The stage graph.

#[test]
fn from_a_stage_defined_earlier_is_a_stage() {
    let g = graph_of("FROM a AS base\nFROM base\n", None).unwrap();
    assert_eq!(g.edges[1][0].source, Source::Stage(0));
    assert_eq!(g.stage_deps(1), vec![0]);
}

#[test]
fn from_a_stage_defined_later_is_an_image() {
    let g = graph_of("FROM later AS a\nFROM b AS later\n", None).unwrap();
    assert_eq!(g.edges[0][0].source, Source::Image("later".into()));
}

#[test]
fn copy_from_by_name_index_and_image() {
    let g = graph_of(
        "FROM a AS one\nFROM b\nCOPY --from=one / /\nCOPY --from=0 / /\nCOPY --from=nginx:latest / /\n",
        None,
    )
    .unwrap();
    let sources: Vec<&Source> = g.edges[1].iter().map(|e| &e.source).collect();
    assert_eq!(
        sources,
        vec![
            &Source::Image("b".into()),
            &Source::Stage(0),
            &Source::Stage(0),
            &Source::Image("nginx:latest".into())
        ]
    );
    assert_eq!(g.edges[1][1].kind, EdgeKind::CopyFrom);
}

#[test]
fn run_mount_from_names_a_stage() {
    let g = graph_of(
        "FROM a AS deps\nFROM b\nRUN --mount=type=bind,from=deps,target=/d true\n",
        None,
    )
    .unwrap();
    assert_eq!(g.edges[1][1].source, Source::Stage(0));
    assert_eq!(g.edges[1][1].kind, EdgeKind::MountFrom);
}

#[test]
fn tmpfs_mount_has_no_source() {
    let g = graph_of("FROM a\nRUN --mount=type=tmpfs,target=/t true\n", None).unwrap();
    assert_eq!(g.edges[0].len(), 1);
}

#[test]
fn copy_from_index_out_of_range() {
    let e = graph_of("FROM a\nCOPY --from=5 / /\n", None).unwrap_err();
    assert!(e.contains("invalid stage index 5"), "{e}");
}

#[test]
fn copy_from_negative_index() {
    let e = graph_of("FROM a\nCOPY --from=-1 / /\n", None).unwrap_err();
    assert!(e.contains("invalid stage index -1"), "{e}");
}

#[test]
fn unknown_from_that_is_no_image_reference_is_refused() {
    let e = graph_of("FROM a AS builder\nFROM b\nCOPY --from=Bulder! / /\n", None).unwrap_err();
    assert!(e.contains("failed to parse stage name \"Bulder!\""), "{e}");
}

#[test]
fn unknown_from_suggests_the_nearest_stage() {
    let e = graph_of("FROM a AS builder\nFROM b\nCOPY --from=builer_ / /\n", None).unwrap_err();
    assert!(e.contains("did you mean stage \"builder\""), "{e}");
}

#[test]
fn stage_used_before_it_is_defined() {
    let e = graph_of(
        "FROM a AS first\nCOPY --from=later / /\nFROM b AS later\n",
        Some("first"),
    )
    .unwrap_err();
    assert!(
        e.contains("cannot copy from stage \"later\", it needs to be defined before current stage \"first\""),
        "{e}"
    );
}

#[test]
fn mount_from_a_later_stage() {
    let e = graph_of(
        "FROM a AS first\nRUN --mount=from=later,target=/x true\nFROM b AS later\n",
        Some("first"),
    )
    .unwrap_err();
    assert!(e.contains("cannot mount from stage \"later\""), "{e}");
}

#[test]
fn forward_reference_in_a_pruned_stage_is_no_error() {
    // The reference only dispatches the stages the target needs.
    let g = graph_of(
        "FROM a AS first\nCOPY --from=later / /\nFROM b AS later\n",
        Some("later"),
    )
    .unwrap();
    assert_eq!(g.needed, vec![1]);
}

#[test]
fn cycle_is_refused() {
    let e = graph_of(
        "FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n",
        None,
    )
    .unwrap_err();
    assert!(
        e.contains("circular dependency detected on stage: x"),
        "{e}"
    );
}

#[test]
fn copy_from_itself_is_a_cycle() {
    let e = graph_of("FROM a AS x\nCOPY --from=x / /\n", None).unwrap_err();
    assert!(
        e.contains("circular dependency detected on stage: x"),
        "{e}"
    );
}

#[test]
fn unknown_target() {
    let e = graph_of("FROM a AS build\n", Some("biuld")).unwrap_err();
    assert!(
        e.contains("target stage \"biuld\" could not be found"),
        "{e}"
    );
    assert!(e.contains("did you mean \"build\""), "{e}");
}

#[test]
fn target_prunes_unneeded_stages() {
    let g = graph_of(
        "FROM a AS base\nFROM base AS test\nFROM base AS app\nFROM b AS unused\n",
        Some("app"),
    )
    .unwrap();
    assert_eq!(g.needed, vec![0, 2]);
    assert_eq!(g.pruned(), vec![1, 3]);
}

#[test]
fn default_target_is_the_last_stage() {
    let g = graph_of("FROM a AS x\nFROM b AS y\n", None).unwrap();
    assert_eq!(g.target, 1);
}

#[test]
fn independent_stages_share_a_level() {
    let g = graph_of(
        "FROM a AS l\nFROM b AS r\nFROM c\nCOPY --from=l / /\nCOPY --from=r / /\n",
        None,
    )
    .unwrap();
    assert_eq!(g.levels(), vec![vec![0, 1], vec![2]]);
}

#[test]
fn chain_levels_follow_depth() {
    let g = graph_of("FROM a AS x\nFROM x AS y\nFROM y AS z\n", None).unwrap();
    assert_eq!(g.levels(), vec![vec![0], vec![1], vec![2]]);
}

#[test]
fn stage_names_match_case_insensitively_in_from_flags() {
    let g = graph_of("FROM a AS Build\nFROM b\nCOPY --from=BUILD / /\n", None).unwrap();
    assert_eq!(g.edges[1][1].source, Source::Stage(0));
}

#[test]
fn image_references_accepted_and_refused() {
    use strata_frontend::reference_error as bad;
    for ok in [
        "alpine",
        "alpine:3.19",
        "docker.io/library/alpine:latest",
        "localhost:5000/a/b_c__d-e.f:v1",
        "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "0123456789abcdef",
    ] {
        assert_eq!(bad(ok), None, "{ok}");
    }
    for no in [
        "Alpine",
        "a b",
        "a:",
        "a/:b",
        "-a",
        "a..b",
        "a@sha256:xyz",
        "",
    ] {
        assert!(bad(no).is_some(), "{no}");
    }
}
