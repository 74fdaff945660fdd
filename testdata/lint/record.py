#!/usr/bin/env python3
"""Records the reference's results for each case: runs
`docker buildx build --call check,format=json` (DOCKER_HOST must point at the
reference daemon, BuildKit 0.25) and writes CASE/reference.json with the
(rule, line, detail) of each warning and whether the check ended in an error.
Usage: record.py [CASE...]   (default: every case directory)"""
import json, os, subprocess, sys

here = os.path.dirname(os.path.abspath(__file__))
cases = sys.argv[1:] or sorted(d for d in os.listdir(here) if os.path.isdir(os.path.join(here, d)))
for case in cases:
    d = os.path.join(here, case)
    args = []
    ba = os.path.join(d, "build-args")
    if os.path.exists(ba):
        for line in open(ba):
            if line.strip():
                args += ["--build-arg", line.strip()]
    out = subprocess.run(["docker", "buildx", "build", "--call", "check,format=json", *args, d],
                         capture_output=True, text=True, timeout=300)
    res = json.loads(out.stdout)
    warnings = sorted(
        ({"rule": w["ruleName"], "line": w["location"]["ranges"][0]["start"].get("line", 0), "detail": w["detail"]}
         for w in (res.get("warnings") or [])),
        key=lambda w: (w["line"], w["rule"], w["detail"]))
    rec = {"warnings": warnings, "error": "buildError" in res}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(rec, f, indent=1)
        f.write("\n")
    print(case, len(warnings), "error" if rec["error"] else "")
