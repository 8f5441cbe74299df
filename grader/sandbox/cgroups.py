"""A control group of its own for each start (cgroup v1 `memory` and `pids`): limits that bind root, and a kill-all.

Each group is made inside the grader's own group of that controller, so the machine's limits on the grader still
hold. Where the hierarchies are missing or not writable (cgroup v2 without delegation, a container, macOS), there
is no group, and `Group.make` returns None.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids")
_counter = itertools.count()


def _own(controller: str) -> Path | None:
    """Where the grader's own group of this (v1) controller is, if it is mounted and writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            folder = ROOT / controller / path.lstrip("/")
            return folder if os.access(folder, os.W_OK) and (folder / "cgroup.procs").exists() else None
    return None


def available() -> bool:
    return all(_own(controller) is not None for controller in CONTROLLERS)


class Group:
    """One start's groups, one per controller; `procs` are the files a process writes its pid to, to join."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders

    @classmethod
    def make(cls, memory: int, processes: int) -> Group | None:
        parents = {controller: _own(controller) for controller in CONTROLLERS}
        if any(parent is None for parent in parents.values()):
            return None
        name = f"grader-stage-{os.getpid()}-{next(_counter)}"
        folders: dict[str, Path] = {}
        group = cls(folders)
        try:
            for controller, parent in parents.items():
                assert parent is not None
                (parent / name).mkdir()
                folders[controller] = parent / name
            _write(folders["memory"] / "memory.limit_in_bytes", memory)
            if (folders["memory"] / "memory.memsw.limit_in_bytes").exists():  # swap too, where it is accounted
                _write(folders["memory"] / "memory.memsw.limit_in_bytes", memory)
            _write(folders["pids"] / "pids.max", processes)
        except OSError:
            group.remove()
            return None
        return group

    @property
    def procs(self) -> list[str]:
        return [str(folder / "cgroup.procs") for folder in self.folders.values()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for folder in self.folders.values():
            with contextlib.suppress(OSError, ValueError):
                found |= {int(line) for line in (folder / "cgroup.procs").read_text().split()}
        return sorted(found)

    def memory_exceeded(self) -> bool:
        """The kernel killed a process of the group for memory (or the group reached its limit and failed)."""
        try:
            control = (self.folders["memory"] / "memory.oom_control").read_text()
        except (OSError, KeyError):
            return False
        counts = dict(line.split() for line in control.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", "0")) > 0 or counts.get("under_oom") == "1"

    def processes_exceeded(self) -> bool:
        """A fork or a new thread was refused because the group had its `pids.max`."""
        try:
            events = (self.folders["pids"] / "pids.events").read_text().split()
        except (OSError, KeyError):
            return False
        return len(events) == 2 and int(events[1]) > 0

    def kill_all(self, seconds: float = 10.0) -> bool:
        """SIGKILL every process in the group until none is left (a fork bomb forks while it is killed)."""
        deadline = time.monotonic() + seconds
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def remove(self) -> None:
        for folder in self.folders.values():
            for _ in range(100):  # a group empties a moment after its last process is reaped
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _write(path: Path, value: int) -> None:
    path.write_text(str(value))
