"""Between the grader and a stage: join its control groups, set its resource limits, then run the command.

Run by the grader's own interpreter (`python -I -S launch.py SPEC`) before any of the stage's code, since a
process started from a threaded grader cannot safely do this between fork and exec. Stdlib only. SPEC is a
JSON object: `{"cgroups": [path to cgroup.procs, ...], "rlimits": {"RLIMIT_AS": n, ...}, "session": bool,
"user": [uid, gid] | null, "argv": [...]}`; `user` is dropped to here when no sandbox of namespaces follows.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def main(spec: dict[str, object]) -> None:
    cgroups = spec.get("cgroups", [])
    rlimits = spec.get("rlimits", {})
    assert isinstance(cgroups, list) and isinstance(rlimits, dict)
    for procs in cgroups:  # first, so that every process of the stage is counted from its first one
        with open(str(procs), "w") as file:
            file.write(str(os.getpid()))
    for name, value in rlimits.items():
        resource.setrlimit(getattr(resource, str(name)), (int(value), int(value)))
    if spec.get("session"):
        os.setsid()
    user = spec.get("user")
    if isinstance(user, list):
        os.setgroups([])
        os.setresgid(int(user[1]), int(user[1]), int(user[1]))
        os.setresuid(int(user[0]), int(user[0]), int(user[0]))
    argv = spec["argv"]
    assert isinstance(argv, list)
    os.execvp(str(argv[0]), [str(arg) for arg in argv])  # noqa: S606 - the grader's command, built by the sandbox


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
