"""What one contained start has of its own: a user, a private copy, relays to the grader's services, its command.

A user of its own (root only) is leased per submission, so the starts of one grade share it and two submissions
graded at once never do; a lock file per uid keeps grader processes (a class graded with --jobs) apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import bwrap
from .inside import Relay, tcp_listener, tcp_to, unix_listener, unix_to

FIRST_UID, UIDS = 61000, 1000
PREFIX = "grader-sandbox-"  # then the grader's pid: a test can see what its own grades left
LOCKS = Path("/run/agent-deploy-labs-grader")
IGNORED = shutil.ignore_patterns(".git", ".venv", "venv", "__pycache__", "node_modules", "*.db", ".*_cache")
LOOPBACK = re.compile(r"(?:127\.0\.0\.1|localhost):(\d{2,5})")
DATA_PREFIX = "grader-data-"  # grader.grade's data folder for a grade: the only place a stage's settings may write
PATH_IN = re.compile(r"(/[^\s:;,'\"]+)")
# Inherited variables a stage never gets: the grader's secrets, tokens and tooling (a CI job's GITHUB_TOKEN).
PRIVATE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_KEY|PRIVATE|COOKIE|SESSION", re.IGNORECASE)
TOOLING: tuple[str, ...] = (
    "GITHUB_",
    "RUNNER_",
    "ACTIONS_",
    "GRADER_",
    "NOX_",
    "VIRTUAL_ENV",
    "CONDA",
    "SSH_",
    "GPG_",
    "AWS_",
)
TOOLING += ("AZURE_", "GOOGLE_", "DOCKER_", "KUBE", "PIP_", "UV_", "XDG_", "DBUS_", "LD_", "PYTHONHOME", "PYTHONPATH")
TOOLING += ("PYTHONSTARTUP", "HOME", "PATH", "TMPDIR", "PWD", "OLDPWD", "MAIL", "USER", "LOGNAME", "SHELL")


def reachable_by_others(path: Path) -> bool:
    """Whether a user with no rights of its own can run `path`: every folder above it searchable by others."""
    real = path.resolve()
    return all(folder.stat().st_mode & stat.S_IXOTH for folder in (real, *real.parents))


@dataclass
class Lease:
    """A uid (and gid) of its own for one submission, until its last start ends."""

    key: str
    uid: int
    lock: int
    users: int = 1

    @property
    def gid(self) -> int:
        return self.uid

    def release(self) -> None:
        with _LEASING:
            self.users -= 1
            if self.users == 0:
                del _LEASES[self.key]
                os.close(self.lock)


_LEASES: dict[str, Lease] = {}
_LEASING = threading.Lock()


def lease(stage: Path, python: Path) -> Lease | None:
    """The submission's own user, where the grader is root (and the user can run its interpreter); else None."""
    if os.geteuid() != 0 or (bwrap.problem() and not reachable_by_others(python)):
        return None
    key = str(stage.resolve())
    with _LEASING:
        if key in _LEASES:
            _LEASES[key].users += 1
            return _LEASES[key]
        LOCKS.mkdir(mode=0o700, parents=True, exist_ok=True)
        for uid in range(FIRST_UID, FIRST_UID + UIDS):
            lock = os.open(LOCKS / f"uid-{uid}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(lock)
                continue
            _LEASES[key] = Lease(key, uid, lock)
            return _LEASES[key]
    return None


def _give(top: Path, lease: Lease) -> None:
    """Make the stage's user the owner of a folder and all in it, never following a link (an earlier start of
    the same submission may have left one pointing anywhere)."""
    for folder, folders, files in os.walk(top):
        for name in (".", *folders, *files):
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(folder, name), lease.uid, lease.gid)  # noqa: PTH118 - os.walk gives strings


def _writable(env: dict[str, str], stage: Path) -> list[str]:
    """The data folders the settings name (a database's, the metrics'): existing folders inside the grade's own
    data folder (`grader-data-*` in the temp folder). Never any other: a course checked out under /tmp, or a
    stage written there (the sensitivity and ladder runs), would be handed to the stage's user."""
    temp = Path(tempfile.gettempdir()).resolve()
    found: dict[str, None] = {}
    for value in env.values():
        for match in PATH_IN.findall(value):
            path = Path(match)
            folder = path if path.is_dir() else path.parent
            with contextlib.suppress(OSError):
                folder = folder.resolve()
                if folder.is_dir() and _in_grade_data(folder, temp) and stage not in (folder, *folder.parents):
                    found[str(folder)] = None
    return list(found)


def _in_grade_data(folder: Path, temp: Path) -> bool:
    return any(p.parent == temp and p.name.startswith(DATA_PREFIX) for p in (folder, *folder.parents))


def _services(env: dict[str, str], own: int | None) -> list[int]:
    """The loopback ports in the settings where a server of the grader's listens now (not the stage's own)."""
    ports: dict[int, None] = {}
    for value in env.values():
        for port in map(int, LOOPBACK.findall(value)):
            if port == own:
                continue
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                ports[port] = None  # a refusing port (Redis down) stays refused inside: no relay
    return list(ports)


@dataclass
class Workspace:
    """One start's folder: the private copy, its temporary folder, the relays' sockets."""

    root: Path
    stage: Path
    lease: Lease | None
    writable: list[str]
    namespaces: bool
    settings: dict[str, str] = field(default_factory=dict)
    original: str = ""  # the submission's folder, where the sandbox shows its private copy
    relays: list[Relay] = field(default_factory=list)
    baseline: int = 0

    @classmethod
    def make(cls, original: Path, lease: Lease | None, env: dict[str, str]) -> Workspace:
        root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
        shutil.copytree(original, root / "stage", ignore=IGNORED, symlinks=True)
        for name in ("tmp", "sockets"):
            (root / name).mkdir()
        real = original.resolve()
        work = cls(root, root / "stage", lease, _writable(env, real), not bwrap.problem(), env, str(real))
        if lease is not None:
            root.chmod(0o711)  # its user enters the folder, and sees only what it owns there
            for top in (root / "stage", root / "tmp", root / "sockets", *map(Path, work.writable)):
                _give(top, lease)
        work.baseline = work.written()
        return work

    def environment(self, env: dict[str, str], python: Path) -> dict[str, str]:
        """The settings, and of the grader's own environment only what is harmless."""
        kept = {
            key: value
            for key, value in env.items()
            if os.environ.get(key) != value or not (PRIVATE.search(key) or key.startswith(TOOLING))
        }
        home = "/tmp" if self.namespaces else str(self.root / "tmp")  # noqa: S108 - the sandbox's own /tmp
        bin_ = str(python.parent)
        return kept | {"PATH": f"{bin_}:/usr/local/bin:/usr/bin:/bin", "HOME": home, "TMPDIR": home}

    def bwrap(self, command: list[str], python: Path, info_fd: int, fds: list[int], tmp_size: int) -> list[str]:
        """The sandbox's command line: bwrap's options, its first process, and the stage's command."""
        own = None if "--fd" in command else _port_of(command, self.settings)
        outbound = []
        for port in _services(self.settings, own):
            path = self.root / "sockets" / f"out-{port}"
            self.relays.append(Relay(unix_listener(str(path)), tcp_to(port)))
            path.chmod(0o666)  # the socket is for the stage's user, in a folder only it sees
            outbound.append([port, f"{bwrap.SOCKETS_AT}/out-{port}"])
        inbound = []
        if own is not None:
            self.relays.append(Relay(tcp_listener(own), unix_to(str(self.root / "sockets" / f"in-{own}"))))
            inbound.append([own, f"{bwrap.SOCKETS_AT}/in-{own}"])
        prefix = Path(sys.base_prefix).resolve()
        options = bwrap.arguments(
            interpreter_prefix=str(prefix),
            environment=str(python.parent.parent),
            stage=str(self.stage),
            stage_at=self.original,
            writable=self.writable,
            sockets=str(self.root / "sockets"),
            info_fd=info_fd,
            tmp_size=tmp_size,
            as_root=self.lease is not None,
        )
        user = [self.lease.uid, self.lease.gid] if self.lease else None
        spec = {"user": user, "outbound": outbound, "inbound": inbound, "argv": command, "pass_fds": fds}
        return [*options, "--", str(python), "-I", "-S", bwrap.INSIDE_AT, json.dumps(spec)]

    def written(self) -> int:
        """Bytes in the folders the stage can write on disk, beyond what the copy held at the start."""
        total = 0
        tops = [self.stage, *map(Path, self.writable)] + ([] if self.namespaces else [self.root / "tmp"])
        for top in tops:
            for folder, _, files in os.walk(top):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(folder, name)).st_size  # noqa: PTH118 - os.walk's strings
        return max(0, total - self.baseline)

    def remove(self) -> None:
        for relay in self.relays:
            relay.close()
        shutil.rmtree(self.root, ignore_errors=True)


def _port_of(command: list[str], settings: dict[str, str]) -> int | None:
    """The port an image's own command serves on: its --port, else the PORT setting."""
    with contextlib.suppress(ValueError, IndexError):
        if "--port" in command:
            return int(command[command.index("--port") + 1])
        return int(settings["PORT"]) if "PORT" in settings else None
    return None


def missing(group: bool, python: Path) -> list[str]:
    """The guarantees this machine cannot give a stage, each with why."""
    gaps = []
    if problem := bwrap.problem():
        gaps.append(f"no namespaces ({problem}): the stage sees the machine's files and network")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        gaps.append("no user of its own (the grader is not root)")
    elif problem and not reachable_by_others(python):
        gaps.append(f"no user of its own ({python} is in a folder other users cannot enter)")
    if not group:
        gaps.append("no control groups (cgroup v1 memory and pids): memory and process limits are rlimits only")
    return gaps


_SAID = threading.Event()


def say_missing_once(gaps: list[str]) -> None:
    if gaps and not _SAID.is_set():
        _SAID.set()
        print(f"grader: containment is partial here: {'; '.join(gaps)}", file=sys.stderr, flush=True)
