//! `strata build --ulimit NAME=SOFT[:HARD]` end to end: the RUN step's
//! process gets the limits, they are in the step's cache key, and a bad
//! value is a usage error with go-units' words. Compared with BuildKit in
//! tests/compat (`run_ulimit`).

use std::path::PathBuf;

use strata_testutil::{ImportedStore, stderr};

fn strata() -> PathBuf {
    strata_testutil::strata_bin(env!("CARGO_BIN_EXE_strata"))
}

#[test]
fn ulimits_reach_run_steps_and_their_keys() {
    let Some(s) = ImportedStore::new("ulimits_reach_run_steps_and_their_keys", &strata()) else {
        return;
    };
    let ctx = s.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM strata-test/busybox:latest\nRUN echo $(ulimit -n) $(ulimit -Hn) $(ulimit -u) > /limits\n",
    )
    .unwrap();
    let build = |limits: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "limited:1"];
        for l in limits {
            args.extend(["--ulimit", l]);
        }
        args.push(ctx.to_str().unwrap());
        let o = s.output(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let cat = s.output(&["run", "--rm", "limited:1", "cat", "/limits"]);
        (
            stderr(&o),
            String::from_utf8_lossy(&cat.stdout).into_owned(),
        )
    };
    let (_, limits) = build(&["nofile=1024:2048", "nproc=300"]);
    assert_eq!(limits, "1024 2048 300\n");
    // Other limits are another key: the step runs again.
    let (progress, limits) = build(&["nofile=512"]);
    assert!(!progress.contains("CACHED"), "{progress}");
    assert_eq!(
        limits.split_whitespace().take(2).collect::<Vec<_>>(),
        ["512", "512"]
    );
    let (progress, _) = build(&["nofile=512"]);
    assert!(progress.contains("CACHED"), "{progress}");

    for (bad, says) in [
        ("nofiles=1", "invalid ulimit type: nofiles"),
        ("nofile=10:5", "10 > 5"),
        ("nofile=x", "parsing \"x\""),
    ] {
        let o = s.output(&["build", "--ulimit", bad, ctx.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{bad}: {}", stderr(&o));
    }
}
