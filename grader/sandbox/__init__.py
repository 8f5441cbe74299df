"""Containment of a graded stage: `sandbox.Popen` is where the runner starts one (see grader/CONTAINMENT.md).

Everywhere: a private copy of the submission, its own read-only virtual environment, resource limits, a wall clock
on the whole start, and every process it started gone when it stops. Where the kernel allows it: its own user,
namespaces that show it nothing of the machine but what it needs and no network but loopback, and control groups
whose limits bind root. Where a guarantee is missing, one line on stderr says which, once per grader process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

from . import environment, limits
from .cgroups import Group
from .workspace import DATA_PREFIX as DATA_PREFIX  # the grade's data folder: the settings' only writable place
from .workspace import Lease, Workspace, lease, missing, say_missing_once

LAUNCH = Path(__file__).with_name("launch.py")
WATCH_SECONDS = 0.25
_LIVE: set[Popen] = set()  # held until released, so that an interrupted grader can still end each one
_BY_LOG: weakref.WeakValueDictionary[str, Popen] = weakref.WeakValueDictionary()
_RELEASING = threading.Lock()


def enabled() -> bool:
    """Whether stages are contained: always, unless GRADER_SANDBOX=0 says the code is trusted."""
    return os.environ.get("GRADER_SANDBOX", "1") != "0"


class Popen(subprocess.Popen[bytes]):
    """`subprocess.Popen` for a stage: the same arguments, the command run contained, and the same process API.

    `send_signal` reaches the stage's own first process (inside the sandbox), `poll` and `wait` clean up once it
    has ended, and `broken` names the limit it broke, if any.
    """

    def __init__(
        self,
        args: list[str],
        *,
        cwd: Path,
        env: dict[str, str],
        stdout: IO[bytes],
        stderr: IO[bytes],
        start_new_session: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.limits = limits.current()
        self.breaches: list[str] = []
        self._released = False
        self._inner_pid: int | None = None
        self._log = getattr(stderr, "name", "")
        self._info = -1
        self.lease: Lease | None = None
        self.group: Group | None = None
        self.work: Workspace | None = None
        if not enabled():  # the instructor's choice, for code they trust (their own solutions)
            say_missing_once(["every guarantee (GRADER_SANDBOX=0): the stage runs as the grader, with its files"])
            super().__init__(
                args,
                cwd=cwd,
                env=env,
                stdout=stdout,
                stderr=stderr,
                start_new_session=start_new_session,
                pass_fds=pass_fds,
            )
            return
        try:
            python = environment.python(Path(cwd))
        except environment.InstallError as error:
            from ..runner import StageStartError  # the runner imports this module

            raise StageStartError("the stage's requirements.txt did not install", str(error)) from None
        self.lease = lease(Path(cwd), python)
        self.work = work = Workspace.make(Path(cwd), self.lease, env)
        self.group = Group.make(self.limits.memory, self.limits.processes)
        say_missing_once(missing(self.group is not None, python))
        command = [str(python) if arg == sys.executable else arg for arg in args]
        inner_env = work.environment(env, python)
        info_read, info_write = os.pipe() if work.namespaces else (-1, -1)
        spec: dict[str, Any] = {
            "cgroups": self.group.procs if self.group else [],
            "rlimits": self._rlimits(),
            "session": True,
            "user": None if work.namespaces or not self.lease else [self.lease.uid, self.lease.gid],
        }
        if work.namespaces:
            spec["argv"] = work.bwrap(command, python, info_write, list(pass_fds), self.limits.memory)
            fds = (*pass_fds, info_write)
        else:
            spec["argv"] = command
            fds = pass_fds
        launcher = [sys.executable, "-I", "-S", str(LAUNCH), json.dumps(spec)]
        try:
            super().__init__(  # the grader's launcher, then the stage's command, contained
                launcher,
                cwd=work.root if work.namespaces else work.stage,
                env=inner_env,
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                pass_fds=fds,
            )
        except BaseException:
            self._release_resources()
            raise
        finally:
            if info_write >= 0:
                os.close(info_write)
        self._info = info_read
        _LIVE.add(self)
        if self._log:
            _BY_LOG[self._log] = self
        self._watcher = threading.Thread(target=self._watch, name="sandbox-watch", daemon=True)
        self._watcher.start()

    def _rlimits(self) -> dict[str, int]:
        chosen = self.limits
        rlimits = {
            "RLIMIT_AS": chosen.address_space,
            "RLIMIT_NOFILE": chosen.open_files,
            "RLIMIT_FSIZE": chosen.file_size,
            "RLIMIT_CPU": chosen.cpu_seconds,
            "RLIMIT_CORE": 0,
        }
        if self.lease is not None:  # counted per user: a user of its own makes it the stage's own limit
            rlimits["RLIMIT_NPROC"] = chosen.processes
        elif os.geteuid() != 0:  # the grader's user: what it runs already, and the stage's share on top
            rlimits["RLIMIT_NPROC"] = _tasks_of(os.getuid()) + chosen.processes
        return rlimits

    @property
    def _namespaces(self) -> bool:
        return self.work is not None and self.work.namespaces

    # --- the process API the runner uses ---

    def _inner(self) -> int | None:
        """The host pid of the sandbox's first process, which forwards signals to the stage (bwrap's --info-fd)."""
        if self._inner_pid is None and self._info >= 0:
            readable, _, _ = select.select([self._info], [], [], 5.0)
            if readable:
                with contextlib.suppress(OSError, ValueError):
                    data = os.read(self._info, 1 << 16)
                    self._inner_pid = int(json.loads(data)["child-pid"])
            os.close(self._info)
            self._info = -1
        return self._inner_pid

    def send_signal(self, sig: int) -> None:
        inner = self._inner() if self._namespaces else None
        if inner is not None and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(inner, sig)
                return
        super().send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        if self.returncode is None:
            super().kill()

    def poll(self) -> int | None:
        code = super().poll()
        if code is not None:
            self._release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        super().wait(timeout)
        self._release()
        assert self.returncode is not None
        return self.returncode

    # --- limits, and the end ---

    def broken(self) -> str:
        """The limits the stage broke so far, in a sentence for the student ('' if none)."""
        found = list(self.breaches)
        if self.group is not None:
            if self.group.memory_exceeded():
                found.append(limits.memory(self.limits))
            if self.group.processes_exceeded():
                found.append(limits.processes(self.limits))
        found += self._from_log()
        return "; ".join(dict.fromkeys(found))

    def _from_log(self) -> list[str]:
        """Limits that only the stage's own errors show (a refused fork or open, a too large file)."""
        try:
            with open(self._log, "rb") as file:
                file.seek(max(0, os.fstat(file.fileno()).st_size - (1 << 16)))
                text = file.read().decode(errors="replace")
        except OSError:
            return []
        found = []
        if "MemoryError" in text:
            found.append(limits.address_space(self.limits))
        if "Too many open files" in text:
            found.append(limits.open_files(self.limits))
        if "File too large" in text:
            found.append(limits.file_size(self.limits))
        if "can't start new thread" in text or "Resource temporarily unavailable" in text:
            found.append(limits.processes(self.limits))
        return found

    def _watch(self) -> None:
        started = time.monotonic()
        while not self._released:
            if self.work is not None and self.work.written() > self.limits.disk:
                self._stop_for(limits.disk(self.limits))
            elif time.monotonic() - started > self.limits.lifetime_seconds:
                self._stop_for(limits.lifetime(self.limits))
            time.sleep(WATCH_SECONDS)

    def _stop_for(self, reason: str) -> None:
        if reason not in self.breaches:
            self.breaches.append(reason)
        with contextlib.suppress(OSError):
            self.kill()
        if self.group is not None:
            self.group.kill_all()

    def _release(self) -> None:
        with _RELEASING:
            if self._released:
                return
            self._released = True
        code = self.returncode
        if code is not None and code > 128 and self._namespaces:  # the first process's 128 + N: signal N
            self.returncode = -(code - 128)
        if self.returncode == -signal.SIGXCPU:
            self.breaches.append(limits.cpu(self.limits))
        reason = self.broken()
        if reason and self._log:
            with contextlib.suppress(OSError), open(self._log, "a", encoding="utf-8") as file:
                file.write(f"\ngrader: the stage broke a limit of its sandbox: {reason}\n")
        self._final = reason
        self._release_resources()
        _LIVE.discard(self)

    def _release_resources(self) -> None:
        group = getattr(self, "group", None)
        if group is not None:
            group.kill_all()
            group.remove()
        elif getattr(self, "pid", None):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)  # the launcher's session: whatever it left
        if getattr(self, "_info", -1) >= 0:
            os.close(self._info)
            self._info = -1
        if work := getattr(self, "work", None):
            work.remove()
        if held := getattr(self, "lease", None):
            held.release()


def _tasks_of(uid: int) -> int:
    """How many processes and threads `uid` runs now (what RLIMIT_NPROC counts), from /proc."""
    count = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
    return count


def limit_broken(log: Path | str) -> str:
    """The limit the stage whose stderr goes to `log` broke ('' if none, or if it was not contained)."""
    process = _BY_LOG.get(str(log))
    if process is None:
        return ""
    return getattr(process, "_final", None) or process.broken()


@atexit.register
def _end_every_stage() -> None:
    """An interrupted grade: no stage outlives the grader."""
    for process in list(_LIVE):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait(timeout=5)
