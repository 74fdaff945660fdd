"""Prints a greeting read from a YAML file (PyYAML, installed from Debian)."""

import platform
import sys

import yaml

from render import render


def main():
    if sys.argv[1:] == ["--self-test"]:
        line = render({"greeting": "Hi", "from": "test"}, "Linux")
        assert line == "Hi from test (Python on Linux)", line
        print("self-test passed")
        return
    path = sys.argv[1] if len(sys.argv) > 1 else "/etc/hello/greeting.yaml"
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    print(render(doc, platform.system()))


if __name__ == "__main__":
    main()
