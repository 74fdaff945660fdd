//! One test per rule: the smallest Dockerfile that fires it, and one that
//! must not.

use std::collections::BTreeMap;

use super::rules::{self, Rule};
use super::*;
use crate::{BuildInputs, Ignore, Platform};

fn check_with(src: &str, args: &[(&str, &str)], ignore: Option<&Ignore>) -> LintReport {
    let build_args: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let inputs = BuildInputs {
        build_args,
        build_platform: "linux/amd64".parse().unwrap(),
        target_platform: "linux/amd64".parse().unwrap(),
    };
    let opts = LintOptions {
        inputs: &inputs,
        target: None,
        scope: Scope::Check,
        base_env: &|name| {
            (name == "alpine").then(|| vec!["PATH=/bin".to_owned(), "HOME=/root".to_owned()])
        },
        base_platform: &|name| (name == "arm-only").then(|| "linux/arm64".parse().unwrap()),
        ignore,
    };
    lint(src, "Dockerfile", &opts)
}

fn check(src: &str) -> LintReport {
    check_with(src, &[], None)
}

/// (line, detail) of each warning of `rule`.
fn fired(report: &LintReport, rule: &Rule) -> Vec<(usize, String)> {
    report
        .warnings
        .iter()
        .filter(|w| w.rule == rule)
        .map(|w| (w.line(), w.detail.clone()))
        .collect()
}

fn lines(report: &LintReport, rule: &Rule) -> Vec<usize> {
    fired(report, rule).into_iter().map(|(l, _)| l).collect()
}

#[test]
fn stage_name_casing() {
    let r = check("FROM scratch AS Build\n");
    assert_eq!(
        fired(&r, &rules::STAGE_NAME_CASING),
        vec![(1, "Stage name 'Build' should be lowercase".to_owned())]
    );
    assert!(lines(&check("FROM scratch AS build\n"), &rules::STAGE_NAME_CASING).is_empty());
}

#[test]
fn from_as_casing() {
    let r = check("FROM scratch as base\n");
    assert_eq!(
        fired(&r, &rules::FROM_AS_CASING),
        vec![(
            1,
            "'as' and 'FROM' keywords' casing do not match".to_owned()
        )]
    );
    // A mixed-case FROM is ConsistentInstructionCasing's, not this rule's.
    assert!(lines(&check("From scratch as base\n"), &rules::FROM_AS_CASING).is_empty());
}

#[test]
fn no_empty_continuation() {
    let r = check("FROM scratch\nCOPY a \\\n\n  /b\nCOPY a \\\n# comment\n  /c\n");
    assert_eq!(lines(&r, &rules::NO_EMPTY_CONTINUATION), vec![4]);
}

#[test]
fn consistent_instruction_casing() {
    let r = check("from scratch\nCOPY a /a\ncopy a /b\n");
    assert_eq!(
        fired(&r, &rules::CONSISTENT_INSTRUCTION_CASING),
        vec![(
            2,
            "Command 'COPY' should match the case of the command majority (lowercase)".to_owned()
        )]
    );
    // A tie counts as upper case.
    assert_eq!(
        lines(
            &check("from scratch\nCOPY a /a\n"),
            &rules::CONSISTENT_INSTRUCTION_CASING
        ),
        vec![1]
    );
}

#[test]
fn duplicate_and_reserved_stage_names() {
    let r = check("FROM scratch AS a\nFROM scratch AS a\nFROM scratch AS scratch\n");
    assert_eq!(lines(&r, &rules::DUPLICATE_STAGE_NAME), vec![2]);
    assert_eq!(
        fired(&r, &rules::RESERVED_STAGE_NAME),
        vec![(
            3,
            "Stage name should not use the same name as reserved stage \"scratch\"".to_owned()
        )]
    );
}

#[test]
fn json_args_recommended() {
    let r = check("FROM scratch\nCMD echo hi\nentrypoint run\n");
    assert_eq!(
        fired(&r, &rules::JSON_ARGS_RECOMMENDED),
        vec![
            (
                2,
                "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals".to_owned()
            ),
            (
                3,
                "JSON arguments recommended for entrypoint to prevent unintended behavior related to OS signals".to_owned()
            ),
        ]
    );
    let r = check("FROM scratch\nSHELL [\"/bin/sh\", \"-c\"]\nCMD echo hi\n");
    assert!(lines(&r, &rules::JSON_ARGS_RECOMMENDED).is_empty());
}

#[test]
fn maintainer_deprecated() {
    assert_eq!(
        lines(
            &check("FROM scratch\nMAINTAINER me\n"),
            &rules::MAINTAINER_DEPRECATED
        ),
        vec![2]
    );
}

#[test]
fn undefined_arg_in_from() {
    let r = check("ARG VERSION=1\nFROM scratch${VERSON}\n");
    assert_eq!(
        fired(&r, &rules::UNDEFINED_ARG_IN_FROM),
        vec![(
            2,
            "FROM argument 'VERSON' is not declared (did you mean VERSION?)".to_owned()
        )]
    );
    let r = check("ARG SUFFIX\nFROM scratch${SUFFIX}\n");
    assert!(lines(&r, &rules::UNDEFINED_ARG_IN_FROM).is_empty());
}

#[test]
fn workdir_relative_path() {
    let r =
        check("FROM scratch\nWORKDIR app\nWORKDIR sub\nFROM scratch\nWORKDIR /abs\nWORKDIR rel\n");
    assert_eq!(lines(&r, &rules::WORKDIR_RELATIVE_PATH), vec![2]);
}

#[test]
fn undefined_var() {
    let r = check("FROM scratch\nARG DIR_ASSETS=a\nCOPY $DIR_ASSET .\nARG unset\nCOPY $unset /\n");
    assert_eq!(
        fired(&r, &rules::UNDEFINED_VAR),
        vec![(
            3,
            "Usage of undefined variable '$DIR_ASSET' (did you mean $DIR_ASSETS?)".to_owned()
        )]
    );
    // A base image's ENV and a base stage's ARG values are defined.
    let r = check("FROM alpine AS base\nARG foo=x\nCOPY $HOME /\nFROM base\nCOPY $foo /\n");
    assert!(
        lines(&r, &rules::UNDEFINED_VAR).is_empty(),
        "{:?}",
        r.warnings
    );
    // ENV's words see the environment before the instruction.
    let r = check("FROM scratch\nENV A=1 B=$A\n");
    assert_eq!(lines(&r, &rules::UNDEFINED_VAR), vec![2]);
    // RUN's command is the shell's business; its --mount is ours.
    let r = check("FROM scratch\nRUN --mount=type=cache,target=/c$X echo $Y\n");
    assert_eq!(
        fired(&r, &rules::UNDEFINED_VAR),
        vec![(2, "Usage of undefined variable '$X'".to_owned())]
    );
}

#[test]
fn multiple_instructions_disallowed() {
    let r = check("FROM scratch\nCMD [\"a\"]\nHEALTHCHECK NONE\nCMD [\"b\"]\nHEALTHCHECK NONE\n");
    assert_eq!(
        fired(&r, &rules::MULTIPLE_INSTRUCTIONS_DISALLOWED),
        vec![
            (
                2,
                "Multiple CMD instructions should not be used in the same stage because only the last one will be used".to_owned()
            ),
            (
                3,
                "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".to_owned()
            ),
        ]
    );
}

#[test]
fn legacy_key_value_format() {
    let r = check("FROM scratch\nENV A b\nLABEL x y z\nENV C=d\n");
    assert_eq!(lines(&r, &rules::LEGACY_KEY_VALUE_FORMAT), vec![2, 3]);
    assert_eq!(
        r.warnings[0].detail,
        "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"
    );
}

#[test]
fn invalid_base_image_platform() {
    let r = check("FROM arm-only\n");
    assert_eq!(
        fired(&r, &rules::INVALID_BASE_IMAGE_PLATFORM),
        vec![(
            1,
            "Base image arm-only was pulled with platform \"linux/arm64\", expected \"linux/amd64\" for current build".to_owned()
        )]
    );
    assert!(lines(&check("FROM alpine\n"), &rules::INVALID_BASE_IMAGE_PLATFORM).is_empty());
}

#[test]
fn redundant_target_platform() {
    let r =
        check("FROM --platform=$TARGETPLATFORM scratch\nFROM --platform=$BUILDPLATFORM scratch\n");
    assert_eq!(lines(&r, &rules::REDUNDANT_TARGET_PLATFORM), vec![1]);
}

#[test]
fn secrets_used_in_arg_or_env() {
    let r = check("FROM scratch\nARG GITHUB_TOKEN\nENV public_key=1 keyboard=2 AUTH=3\n");
    assert_eq!(
        fired(&r, &rules::SECRETS_USED_IN_ARG_OR_ENV),
        vec![
            (
                2,
                "Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")"
                    .to_owned()
            ),
            (
                3,
                "Do not use ARG or ENV instructions for sensitive data (ENV \"AUTH\")".to_owned()
            ),
        ]
    );
}

#[test]
fn invalid_default_arg_in_from() {
    let r = check_with("ARG IMAGE\nFROM $IMAGE\n", &[("IMAGE", "scratch")], None);
    assert_eq!(
        fired(&r, &rules::INVALID_DEFAULT_ARG_IN_FROM),
        vec![(
            2,
            "Default value for ARG $IMAGE results in empty or invalid base image name".to_owned()
        )]
    );
    assert_eq!(r.error, None, "the build arg makes the real build valid");
}

#[test]
fn from_platform_flag_const_disallowed() {
    let r = check(
        "FROM --platform=linux/amd64 scratch\nFROM --platform=linux/arm64 scratch AS arm64-build\n",
    );
    assert_eq!(
        lines(&r, &rules::FROM_PLATFORM_FLAG_CONST_DISALLOWED),
        vec![1]
    );
}

#[test]
fn copy_ignored_file_is_experimental() {
    let ignore = Ignore::parse("secret\n").unwrap();
    let src = "FROM scratch\nCOPY secret /\nCOPY --from=other secret /\n";
    let r = check_with(src, &[], Some(&ignore));
    assert!(lines(&r, &rules::COPY_IGNORED_FILE).is_empty());
    let r = check_with(
        &format!("# check=experimental=CopyIgnoredFile\n{src}"),
        &[],
        Some(&ignore),
    );
    assert_eq!(
        fired(&r, &rules::COPY_IGNORED_FILE),
        vec![(
            3,
            "Attempting to Copy file \"secret\" that is excluded by .dockerignore".to_owned()
        )]
    );
}

#[test]
fn invalid_definition_description() {
    let src = "# check=experimental=InvalidDefinitionDescription\n# bar is not foo\nARG foo\n# foo the foo\nARG foo\n#\nARG x\n";
    assert_eq!(
        lines(&check(src), &rules::INVALID_DEFINITION_DESCRIPTION),
        vec![3]
    );
}

#[test]
fn expose_rules() {
    let r = check("FROM scratch\nEXPOSE 80/TCP 127.0.0.1:8080:80 90\n");
    assert_eq!(lines(&r, &rules::EXPOSE_PROTO_CASING), vec![2]);
    assert_eq!(
        fired(&r, &rules::EXPOSE_INVALID_FORMAT),
        vec![(
            2,
            "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:8080:80'".to_owned()
        )]
    );
}

#[test]
fn skip_error_and_build_arg_override() {
    let src = "# check=skip=JSONArgsRecommended\nFROM scratch\nCMD echo\nMAINTAINER me\n";
    let r = check(src);
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].rule.name, "MaintainerDeprecated");
    // The build arg replaces the directive entirely.
    let r = check_with(src, &[("BUILDKIT_DOCKERFILE_CHECK", "error=true")], None);
    assert_eq!(r.warnings.len(), 2);
    assert_eq!(
        r.error.map(|e| e.message),
        Some(
            "lint violation found for rules: JSONArgsRecommended, MaintainerDeprecated".to_owned()
        )
    );
    let r = check("# check=bogus\nFROM scratch\n");
    assert!(
        r.error
            .is_some_and(|e| e.message.contains("invalid check option"))
    );
}

#[test]
fn errors_stop_like_the_reference() {
    // A base that is no reference stops before any stage is dispatched.
    let r = check("FROM scratch AS builder\nFROM Builder\nCMD echo\n");
    assert!(lines(&r, &rules::JSON_ARGS_RECOMMENDED).is_empty());
    assert!(r.error.is_some());
    // An invalid STOPSIGNAL stops the dispatch at that line.
    let r = check("FROM scratch\nSTOPSIGNAL $S\nCOPY $T /\n");
    assert_eq!(lines(&r, &rules::UNDEFINED_VAR), vec![2]);
    assert_eq!(
        r.error.map(|e| e.message),
        Some("invalid signal: ".to_owned())
    );
}

#[test]
fn build_scope_checks_only_needed_stages() {
    let inputs = BuildInputs::host(BTreeMap::new());
    let src = "FROM scratch AS unused\nCMD echo\nFROM scratch\nCMD echo\n";
    let mut opts = LintOptions {
        inputs: &inputs,
        target: None,
        scope: Scope::Build,
        base_env: &|_| None,
        base_platform: &|_| None,
        ignore: None,
    };
    assert_eq!(
        lines(&lint(src, "D", &opts), &rules::JSON_ARGS_RECOMMENDED),
        vec![4]
    );
    opts.scope = Scope::Check;
    assert_eq!(
        lines(&lint(src, "D", &opts), &rules::JSON_ARGS_RECOMMENDED),
        vec![2, 4]
    );
}

#[test]
fn copy_from_near_a_stage_name_is_hinted() {
    let r = check("FROM scratch AS build\nFROM scratch\nCOPY --from=biuld /a /\n");
    assert_eq!(r.hints.len(), 1);
    assert_eq!(r.hints[0].line, 3);
    assert!(
        r.hints[0].message.contains("did you mean build?"),
        "{:?}",
        r.hints
    );
    assert!(
        check("FROM scratch AS build\nFROM scratch\nCOPY --from=build /a /\n")
            .hints
            .is_empty()
    );
    let r = check(
        "FROM scratch AS cache\nFROM scratch\nRUN --mount=type=bind,from=cahce,target=/c true\n",
    );
    assert_eq!(
        r.hints
            .iter()
            .map(|h| h.message.as_str())
            .collect::<Vec<_>>(),
        vec![
            "RUN --mount from=cahce names no stage, so it is pulled as an image (did you mean cache?)"
        ]
    );
}

#[test]
fn text_and_json_forms() {
    let r = check("FROM scratch\nCMD echo\n");
    let text = render_text(&r);
    assert!(
        text.starts_with("Check complete, 1 warning has been found!\n"),
        "{text}"
    );
    assert!(text.contains("\nWARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n"), "{text}");
    assert!(text.contains("Dockerfile:2\n--------------------\n   1 |     FROM scratch\n   2 | >>> CMD echo\n   3 |     \n--------------------\n"), "{text}");
    let json = render_json(&r);
    assert_eq!(json["warnings"][0]["ruleName"], "JSONArgsRecommended");
    assert_eq!(
        json["warnings"][0]["location"]["ranges"][0]["start"]["line"],
        2
    );
    assert_eq!(
        json["sources"][0]["data"],
        "RlJPTSBzY3JhdGNoCkNNRCBlY2hvCg=="
    );
    assert_eq!(
        render_text(&check("FROM scratch\n")),
        "Check complete, no warnings found.\n"
    );
    assert_eq!(
        r.warnings[0].short(),
        "JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (line 2)"
    );
}

#[test]
fn every_rule_is_in_the_table_once() {
    let mut names: Vec<&str> = rules::ALL.iter().map(|r| r.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), rules::ALL.len());
    assert_eq!(rules::ALL.len(), 22);
    assert!(rules::by_name("UndefinedVar").is_some());
    let _ = Platform::host();
}
