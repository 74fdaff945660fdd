use serde_json::json;

use super::*;

/// Applies a Dockerfile's instructions (after its FROM) to a fresh
/// config, as a stage on `scratch` would; returns the history entries.
fn apply_all(dockerfile: &str, build_args: &[(&str, &str)]) -> (ImageConfig, Vec<String>) {
    let df = strata_frontend::parse(dockerfile, "Dockerfile").expect("parses");
    let inputs = BuildInputs::host(
        build_args
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    let global = GlobalScope::new(&df, &inputs).expect("global scope");
    let mut stage = StageConfig::new(ImageConfig::new("linux", "amd64"));
    let mut histories = Vec::new();
    for ins in df
        .instructions
        .iter()
        .skip_while(|i| i.keyword != "from")
        .skip(1)
    {
        let applied = stage
            .apply(ins, &global, &inputs, df.escape)
            .unwrap_or_else(|e| panic!("{}: {e}", ins.text));
        if applied.recorded {
            histories.push(applied.history);
        }
    }
    (stage.config, histories)
}

/// Applies one instruction line to `config`, as the first step of a
/// stage (`cmd_set` says whether the stage has set CMD).
fn apply_line(
    config: &mut ImageConfig,
    mut cmd_set: bool,
    line: &str,
) -> Result<Applied, ConfigError> {
    let df = strata_frontend::parse(&format!("{line}\n"), "Dockerfile").expect("parses");
    let inputs = BuildInputs::host(BTreeMap::new());
    let global = GlobalScope::new(&df, &inputs).expect("global scope");
    apply_instruction(
        ConfigState {
            config,
            cmd_set: &mut cmd_set,
        },
        &df.instructions[0],
        ArgScope {
            stage: &mut StageScope::new(),
            global: &global,
            inputs: &inputs,
        },
        df.escape,
    )
}

fn apply_err(line: &str) -> String {
    apply_line(&mut ImageConfig::new("linux", "amd64"), false, line)
        .expect_err("refused")
        .0
}

#[test]
fn env_forms_quoting_and_expansion() {
    let (c, h) = apply_all(
        "FROM scratch\nENV A=1 B=\"two words\"\nENV C ${A} and more\nENV A=$A$A\n",
        &[],
    );
    assert_eq!(
        c.config.env,
        // A reassigned variable keeps its place, as in BuildKit.
        Some(vec![
            "A=11".to_owned(),
            "B=two words".to_owned(),
            "C=1 and more".to_owned()
        ])
    );
    assert_eq!(h, ["ENV A=1 B=two words", "ENV C=1 and more", "ENV A=11"]);
    assert!(apply_err("ENV A=1 B").contains("expected KEY=VALUE"));
    // LABEL takes the legacy form too.
    let (c, h) = apply_all("FROM scratch\nLABEL key some \"quoted\" value\n", &[]);
    assert_eq!(c.config.labels.expect("labels")["key"], "some quoted value");
    assert_eq!(h, ["LABEL key=some quoted value"]);
}

#[test]
fn arg_bookkeeping_feeds_expansion_and_env_wins() {
    let (c, h) = apply_all(
        "FROM scratch\nARG V=default\nARG W\nUSER $V\nENV V=env\nLABEL v=$V w=${W:-unset}\n",
        &[("W", "given")],
    );
    assert_eq!(h[0], "ARG V=default");
    assert_eq!(c.config.user.as_deref(), Some("default"));
    let labels = c.config.labels.expect("labels");
    assert_eq!(labels["v"], "env");
    assert_eq!(labels["w"], "given");
}

#[test]
fn an_arg_set_after_an_env_of_its_name_wins_until_the_next_env() {
    let (c, _) = apply_all(
        "FROM scratch\nENV V=env\nARG V=arg\nLABEL a=$V\nENV V=env2\nLABEL b=$V\n",
        &[],
    );
    let labels = c.config.labels.expect("labels");
    assert_eq!(
        (labels["a"].as_str(), labels["b"].as_str()),
        ("arg", "env2")
    );
    // The image's Env keeps what ENV set.
    assert_eq!(c.config.env, Some(vec!["V=env2".to_owned()]));
}

#[test]
fn expose_names_each_port_of_a_range() {
    let (c, h) = apply_all("FROM scratch\nEXPOSE 80 53/udp 8000-8002/tcp\n", &[]);
    let ports: Vec<String> = c.config.exposed_ports.expect("ports").into_keys().collect();
    assert_eq!(
        ports,
        ["53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp"]
    );
    // `EXPOSE %v` of the ports as parsed from the words sorted as written.
    assert_eq!(h, ["EXPOSE [53/udp 80/tcp 8000/tcp 8001/tcp 8002/tcp]"]);
    assert!(apply_err("EXPOSE 9-8").contains("invalid port \"9-8\""));
    assert!(apply_err("EXPOSE http").contains("invalid port"));
    assert!(apply_err("EXPOSE 80/icmp").contains("invalid port"));
    // Only the container port counts, its protocol in lower case, repeats
    // kept in the history (BuildKit's parsePort).
    let (c, h) = apply_all(
        "FROM scratch\nEXPOSE 127.0.0.1:80:80 [::1]:8080:8080/TcP 5000:5000 8000 8000\n",
        &[],
    );
    let ports: Vec<String> = c.config.exposed_ports.expect("ports").into_keys().collect();
    assert_eq!(ports, ["5000/tcp", "80/tcp", "8000/tcp", "8080/tcp"]);
    assert_eq!(h, ["EXPOSE [80/tcp 5000/tcp 8000/tcp 8000/tcp 8080/tcp]"]);
    assert!(apply_err("EXPOSE nothost:80:80").contains("invalid IP address"));
}

#[test]
fn cmd_and_entrypoint_forms_and_the_cmd_reset() {
    // Shell form goes through SHELL; exec form is taken as is.
    let (c, h) = apply_all(
        "FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo $HOME\nENTRYPOINT [\"/init\"]\n",
        &[],
    );
    assert_eq!(
        c.config.cmd,
        Some(vec!["/bin/bash".into(), "-c".into(), "echo $HOME".into()])
    );
    assert_eq!(c.config.entrypoint, Some(vec!["/init".to_owned()]));
    // `SHELL %v`, `CMD %q` and `ENTRYPOINT %q` in the reference.
    assert_eq!(h[0], "SHELL [/bin/bash -c]");
    assert_eq!(h[1], r#"CMD ["/bin/bash" "-c" "echo $HOME"]"#);
    assert_eq!(h[2], r#"ENTRYPOINT ["/init"]"#);
    // An ENTRYPOINT resets a CMD this stage did not set.
    let mut config = ImageConfig::new("linux", "amd64");
    config.config.cmd = Some(vec!["inherited".into()]);
    apply_line(&mut config, false, "ENTRYPOINT [\"/e\"]").expect("applies");
    assert_eq!(config.config.cmd, None);
    assert!(apply_err("SHELL /bin/bash -c").contains("JSON form"));
}

#[test]
fn workdir_joins_cleans_and_asks_for_the_directory() {
    let (c, h) = apply_all("FROM scratch\nWORKDIR /a\nWORKDIR b/../c/.\n", &[]);
    assert_eq!(c.config.working_dir.as_deref(), Some("/a/c"));
    assert_eq!(h, ["WORKDIR /a", "WORKDIR /a/c"]);
    let mut config = ImageConfig::new("linux", "amd64");
    let applied = apply_line(&mut config, false, "WORKDIR /x/y").expect("applies");
    assert_eq!(applied.workdir.as_deref(), Some("/x/y"));
}

#[test]
fn healthcheck_volume_stopsignal_onbuild_maintainer() {
    let (c, h) = apply_all(
        "FROM scratch\nHEALTHCHECK --interval=1m30s --retries=3 CMD [\"true\"]\nVOLUME [\"/data\", \"/logs\"]\nSTOPSIGNAL SIGINT\nONBUILD RUN make\nMAINTAINER me\n",
        &[],
    );
    let hc = c.config.healthcheck.expect("healthcheck");
    assert_eq!(hc.test, ["CMD", "true"]);
    assert_eq!(hc.interval, 90_000_000_000);
    assert_eq!(hc.retries, 3);
    let vols: Vec<String> = c.config.volumes.expect("volumes").into_keys().collect();
    assert_eq!(vols, ["/data", "/logs"]);
    assert_eq!(c.config.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(c.config.on_build, Some(vec!["RUN make".to_owned()]));
    assert_eq!(c.author.as_deref(), Some("me"));
    assert_eq!(
        h[0],
        r#"HEALTHCHECK &{["CMD" "true"] "1m30s" "0s" "0s" "0s" '\x03'}"#
    );
    assert_eq!(h[1], "VOLUME [/data /logs]");
    assert_eq!(h.len(), 4, "ONBUILD has no history entry: {h:?}");
    assert!(apply_err("VOLUME [\"\"]").contains("can not be an empty string"));
    assert!(apply_err("HEALTHCHECK --interval=soon CMD true").contains("not a duration"));
    assert!(apply_err("HEALTHCHECK true").contains("NONE or CMD"));
}

#[test]
fn build_steps_are_not_config_instructions() {
    assert_eq!(apply_err("RUN true"), "RUN is not allowed here");
}

#[test]
fn changes_parse_as_dockerfile_lines() {
    let out = apply_changes(
        &json!({}),
        &[
            "CMD echo hi".into(),
            "ENV A=1 B=\"two words\"".into(),
            "EXPOSE 8000-8001".into(),
            "WORKDIR /srv".into(),
            "LABEL \"a b\"=c".into(),
        ],
    )
    .expect("applies");
    assert_eq!(
        out,
        json!({
            "Cmd": ["/bin/sh", "-c", "echo hi"],
            "Env": ["A=1", "B=two words"],
            "ExposedPorts": {"8000/tcp": {}, "8001/tcp": {}},
            "WorkingDir": "/srv",
            "Labels": {"a b": "c"},
        })
    );
    let err = apply_changes(&json!({}), &["FROM x".into()]).expect_err("refused");
    assert!(
        err.0.starts_with("FROM x: unsupported instruction"),
        "{err}"
    );
    let err = apply_changes(&json!({}), &["EXPOSE 9-8".into()]).expect_err("refused");
    assert_eq!(err.0, "EXPOSE 9-8: invalid port \"9-8\"");
}

#[test]
fn changes_keep_what_they_do_not_touch() {
    let base = json!({
        "Hostname": "abc",
        "Env": ["PATH=/bin"],
        "Cmd": ["sh"],
        "Labels": {"keep": "1"},
    });
    assert_eq!(apply_changes(&base, &[]).expect("no change"), base);
    let out = apply_changes(&base, &["LABEL new=2".into(), "USER nobody".into()]).expect("applies");
    assert_eq!(
        out,
        json!({
            "Hostname": "abc",
            "Env": ["PATH=/bin"],
            "Cmd": ["sh"],
            "Labels": {"keep": "1", "new": "2"},
            "User": "nobody",
        })
    );
    // As in a Dockerfile, an ENTRYPOINT resets the inherited CMD.
    let out = apply_changes(&base, &["ENTRYPOINT [\"/e\"]".into()]).expect("applies");
    assert_eq!(out.get("Cmd"), None);
    assert_eq!(out["Entrypoint"], json!(["/e"]));
}

#[test]
fn durations() {
    assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
    assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
    assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
    assert_eq!(parse_duration_ns("abc"), None);
    assert_eq!(parse_duration_ns(""), None);
}

#[test]
fn expose_ranges_name_each_port() {
    assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
    assert_eq!(expose_ports("53/udp").unwrap(), ["53/udp"]);
    assert_eq!(
        expose_ports("8000-8002/udp").unwrap(),
        ["8000/udp", "8001/udp", "8002/udp"]
    );
    assert!(expose_ports("http").is_err());
    assert!(expose_ports("9-8").is_err());
}

#[test]
fn workdir_paths_are_cleaned() {
    assert_eq!(clean_abs(Path::new("/a/./b/../c")), "/a/c");
    assert_eq!(clean_abs(Path::new("/")), "/");
}

#[test]
fn env_set_replaces() {
    let mut e = vec!["A=1".to_owned(), "B=2".to_owned()];
    env_set(&mut e, "A", "3");
    assert_eq!(e, vec!["A=3", "B=2"]);
    assert_eq!(env_get(&e, "A").as_deref(), Some("3"));
}
