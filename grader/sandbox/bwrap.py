"""The namespaces of a stage's sandbox, with bubblewrap: what it sees of the machine, and no network but loopback.

The stage sees the system's libraries (/usr) and a few files of /etc read-only, its interpreter and environment
read-only, its private copy and the data folders its settings name read-write, and a /tmp of its own in memory.
Nothing else of the machine is there: not the grader, its other profiles' data, other submissions or the report.
As root, bwrap makes the namespaces itself and the sandbox's first process drops to the stage's user; otherwise
it makes them in a user namespace of the grader's own user.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

INSIDE = Path(__file__).with_name("inside.py")
INSIDE_AT = "/run/grader-sandbox/inside.py"
SOCKETS_AT = "/run/grader-sandbox/sockets"
TMP = "/tmp"  # noqa: S108 - inside the sandbox: a tmpfs of its own
SYSTEM = ("/usr",)
LINKS = ("/bin", "/lib", "/lib32", "/lib64", "/libx32", "/sbin")
ETC = ("hosts", "localtime", "nsswitch.conf", "mime.types", "ssl", "ca-certificates", "ld.so.cache", "ld.so.conf")


def _namespaces() -> list[str]:
    flags = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() != 0:
        flags.append("--unshare-user")
    return [*flags, "--die-with-parent", "--as-pid-1"]


@functools.cache
def problem() -> str:
    """Why the stage cannot have namespaces here ('' when it can): no bwrap, or a kernel that refuses them."""
    if not hasattr(os, "geteuid") or not Path("/proc/self/ns").is_dir():
        return "this system has no Linux namespaces"
    program = shutil.which("bwrap")
    if program is None:
        return "bubblewrap (bwrap) is not installed"
    # Every option the sandbox uses (an older bwrap lacks --size or --perms for a tmpfs).
    probe = [program, *_namespaces(), "--ro-bind", "/", "/", "--proc", "/proc", "--perms", "1777", "--size", "65536"]
    probe += ["--tmpfs", TMP, "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not run: {error}"
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"the kernel refuses bwrap its namespaces ({last})"
    return ""


def _ancestors(path: str) -> list[str]:
    parents = list(reversed(PurePosixPath(path).parents))[1:]  # without "/"
    return [str(parent) for parent in parents]


def _ro(source: str, target: str | None = None) -> list[str]:
    return ["--ro-bind", source, target or source]


def arguments(
    *,
    interpreter_prefix: str,
    environment: str,
    stage: str,
    stage_at: str,
    writable: list[str],
    sockets: str,
    info_fd: int,
    tmp_size: int,
    as_root: bool,
) -> list[str]:
    """bwrap's options for one start (the command follows them). The private copy `stage` is seen at `stage_at`,
    the submission's own path, so that its tracebacks and its working folder name the student's folder."""
    args = [shutil.which("bwrap") or "bwrap", *_namespaces(), "--info-fd", str(info_fd)]
    if as_root:  # for the first process to drop to the stage's user; it has no capability after that
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    for folder in SYSTEM:
        args += _ro(folder)
    for link in LINKS:
        if Path(link).is_symlink():
            args += ["--symlink", str(Path(link).readlink()), link]
        elif Path(link).is_dir():
            args += _ro(link)
    args += ["--perms", "0755", "--dir", "/etc"]  # a parent bwrap makes by itself is for root alone (0700)
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    # The sandbox's own /tmp, in memory: counted in the stage's memory limit, gone with the sandbox.
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(tmp_size), "--tmpfs", TMP]
    made: set[str] = {"/", "/usr", TMP, "/etc", "/proc", "/dev"}
    mounts = [
        (interpreter_prefix, interpreter_prefix, "ro"),
        (environment, environment, "ro"),
        *((folder, folder, "rw") for folder in writable),
        (str(INSIDE), INSIDE_AT, "ro"),
        (sockets, SOCKETS_AT, "rw"),
        (stage, stage_at, "rw"),
    ]
    for source, target, how in mounts:
        if source == target and any(source == done or source.startswith(done + "/") for done in SYSTEM):
            continue  # already there, read-only
        for parent in _ancestors(target):
            if parent not in made:
                args += ["--perms", "0755", "--dir", parent]
                made.add(parent)
        args += _ro(source, target) if how == "ro" else ["--bind", source, target]
        made.add(target)
    return [*args, "--chdir", stage_at]
