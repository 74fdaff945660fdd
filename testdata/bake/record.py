#!/usr/bin/env python3
"""Records the reference's answer for each case: runs
`docker buildx bake --print ARGS` in CASE/ (DOCKER_HOST must point at the
reference daemon, buildx with BuildKit 0.25) and writes its stdout to
CASE/expected.json. ARGS are CASE/args, one per line (none: the default
files and group). The environment is only PATH, HOME and DOCKER_HOST plus
CASE/env (KEY=VALUE lines), as tests/bake.rs runs strata.
Usage: record.py [CASE...]   (default: every case directory)"""
import os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
cases = sys.argv[1:] or sorted(d for d in os.listdir(here) if os.path.isdir(os.path.join(here, d)))
for case in cases:
    d = os.path.join(here, case)
    args = []
    if os.path.exists(os.path.join(d, "args")):
        args = [l.rstrip("\n") for l in open(os.path.join(d, "args")) if l.strip()]
    env = {k: os.environ[k] for k in ("PATH", "HOME", "DOCKER_HOST") if k in os.environ}
    if os.path.exists(os.path.join(d, "env")):
        for line in open(os.path.join(d, "env")):
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                env[k] = v
    out = subprocess.run(["docker", "buildx", "bake", "--print", *args], cwd=d, env=env,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"{case}: docker buildx bake --print failed:\n{out.stderr}")
    with open(os.path.join(d, "expected.json"), "w") as f:
        f.write(out.stdout)
    print(case, "ok", flush=True)
