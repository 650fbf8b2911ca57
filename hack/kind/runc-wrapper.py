#!/usr/bin/python3
"""runc, minus one capability: what dockerd runs instead of runc where the machine lacks it.

kind runs every node `--privileged`, and a privileged container asks for every capability. On a
machine whose bounding set lacks CAP_SYS_RESOURCE (this one: a VM that drops it), runc then fails
with "unable to apply caps: operation not permitted". This wrapper deletes that capability from
every capability list runc is given, then execs runc with the same arguments:
- on create/run, from the bundle's config.json (--bundle, or the working directory);
- on exec, from the process file (--process).
hack/kind/docker.sh registers it (dockerd --add-runtime, --default-runtime) only on such machines.
"""

from __future__ import annotations

import json
import os
import sys

RUNC = "/usr/sbin/runc"
DROP = "CAP_SYS_RESOURCE"


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _strip(caps: dict[str, list[str]] | None) -> None:
    for key, values in (caps or {}).items():
        if isinstance(values, list) and DROP in values:
            caps[key] = [v for v in values if v != DROP]  # type: ignore[index]


def _rewrite(path: str, process_file: bool) -> None:
    with open(path) as f:
        doc = json.load(f)
    _strip(doc.get("capabilities") if process_file else doc.get("process", {}).get("capabilities"))
    tmp = path + ".aftershock-tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def main() -> None:
    args = sys.argv[1:]
    command = next((a for a in args if a in ("create", "run", "exec")), None)
    if command in ("create", "run"):
        bundle = _option(args, "--bundle", "-b") or os.getcwd()
        _rewrite(os.path.join(bundle, "config.json"), process_file=False)
    elif command == "exec":
        process = _option(args, "--process", "-p")
        if process:
            _rewrite(process, process_file=True)
    os.execv(RUNC, [RUNC, *args])


if __name__ == "__main__":
    main()
