"""Start a stage as a real `uvicorn app.main:app` process on a loopback port, read its log, stop it by PID."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from . import sandbox

HOST = "127.0.0.1"
_BACKLOG = 2048  # uvicorn's own default
STOP_GRACE_SECONDS = 10.0
# Settings a grading profile controls (inherited ones could leak a real key or change the stage's behaviour),
# and the import path: a stage imports only what is in its own folder and its environment.
_NOT_INHERITED = (
    *("OPENAI_", "LLM_", "LANGSMITH_", "LANGCHAIN_", "OFFLINE_LLM_", "OTEL_", "SECRET_KEY", "PYTHONPATH"),
    *("WORKERS", "PROMETHEUS_MULTIPROC_DIR"),  # an image start's workers are its Dockerfile's alone
)


class StageStartError(Exception):
    """The stage exited, or never answered GET /health; carries the end of its log."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.message, self.log_tail = message, log_tail


def free_port() -> int:
    """A loopback port nothing listens on right now (another process may take it before the stage does)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection while the block runs: bound, never listening, so no
    other process can take it and start answering there."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        yield sock.getsockname()[1]


def _held_port() -> socket.socket | None:
    """A loopback socket already listening on a port of its own, for uvicorn to serve on (`--fd`); None where a
    child process cannot be handed a socket (Windows).

    Holding the port from the moment it is chosen means no other start can take it first. With a port that is
    only free when chosen, two stages started together (a grade's profiles, a class graded in parallel) could
    be given the same one: one fails to bind, and its grader, seeing the other answer there, grades that one.
    """
    if os.name != "posix":
        return None
    sock = socket.socket()
    try:
        sock.bind((HOST, 0))
        sock.listen(_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class StageLog:
    """The stage's stdout and stderr, each in a file; `ready_at` marks where serving began."""

    stdout: Path
    stderr: Path
    ready_at: int = 0

    def out(self) -> str:
        return self.stdout.read_text(encoding="utf-8", errors="replace")

    def everything(self) -> str:
        return self.out() + self.stderr.read_text(encoding="utf-8", errors="replace")

    def serving_lines(self) -> list[str]:
        """The stdout lines written since the stage answered its first GET /health."""
        with open(self.stdout, "rb") as file:
            file.seek(self.ready_at)
            text = file.read().decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()]

    def tail(self, lines: int = 30) -> str:
        """The last lines of stdout and of stderr, for a student to see why the stage failed."""
        parts = []
        for name, path in (("stdout", self.stdout), ("stderr", self.stderr)):
            text = path.read_text(encoding="utf-8", errors="replace").rstrip()
            if text:
                parts.append(f"--- {name} (last {lines} lines) ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(the stage wrote nothing)"


class Process(Protocol):
    """What the runner needs of a stage's process: a Popen, or a child of the stage's fork server."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


@dataclass
class RunningStage:
    """A started stage: where it answers, its process and its log."""

    url: str
    process: Process
    log: StageLog


FORKSERVER = Path(__file__).with_name("forkserver.py")
# Run by path with `-c`, so that the stage's folder, not the grader's, is first on its import path (as with -m).
_BOOT = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
READY_SECONDS = 120.0


class ForkServer:
    """The grader's end of a stage's fork server (`forkserver.py`): one per grade, each start forked from it.

    A start from it skips the import of the stage's libraries, the bulk of a cold start; the stage's own code
    is imported in each start's process, with that start's settings. `None` from `open` (no fork on this
    platform, or a library that makes forking unsafe): the runner starts each stage cold.
    """

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self._lock = threading.Lock()  # one request at a time: answers come in order
        self._answers: list[dict[str, Any]] = []
        self._answered = threading.Condition()
        self._exits: dict[int, int] = {}
        self._reader = threading.Thread(target=self._read, name="forkserver-reader", daemon=True)
        self._reader.start()

    @classmethod
    async def open(cls, stage: Path, env: dict[str, str]) -> ForkServer | None:
        if not hasattr(os, "fork") or sys.platform == "darwin":  # macOS: forking after imports is not safe
            return None
        server = await asyncio.to_thread(cls._launch, stage, env)
        ready = await asyncio.to_thread(server._answer, READY_SECONDS)
        if not ready.get("safe"):
            await asyncio.to_thread(server.close)
            return None
        return server

    @classmethod
    def _launch(cls, stage: Path, env: dict[str, str]) -> ForkServer:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter running our own script
            [sys.executable, "-c", _BOOT, str(FORKSERVER)],
            cwd=stage,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        return cls(process)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            with self._answered:
                if "exited" in message:
                    self._exits[int(message["exited"])] = int(message["code"])
                else:
                    self._answers.append(message)
                self._answered.notify_all()
        with self._answered:
            self._answers.append({"error": "the fork server exited"})
            self._answered.notify_all()

    def _answer(self, seconds: float) -> dict[str, Any]:
        with self._answered:
            if not self._answered.wait_for(lambda: self._answers, timeout=seconds):
                return {"error": f"the fork server did not answer within {seconds:g} s"}
            return self._answers.pop(0)

    def exit_code(self, pid: int, timeout: float | None = 0.0) -> int | None:
        """The child's exit status once it has ended (waiting up to `timeout` seconds; None: forever)."""
        with self._answered:
            self._answered.wait_for(lambda: pid in self._exits or self.process.poll() is not None, timeout=timeout)
            return self._exits.get(pid)

    def fork(self, env: dict[str, str], log: StageLog) -> tuple[Forked, int]:
        """A child serving the stage with `env`, its output in `log`'s files; and the port it listens on."""
        request = {"env": env, "stdout": str(log.stdout), "stderr": str(log.stderr)}
        with self._lock:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps(request).encode() + b"\n")
                self.process.stdin.flush()
            except OSError:
                raise StageStartError("the fork server is gone", log.tail()) from None
            answer = self._answer(READY_SECONDS)
        if "pid" not in answer:
            raise StageStartError(f"the fork server could not start the stage: {answer.get('error')}", log.tail())
        return Forked(self, int(answer["pid"])), int(answer["port"])

    def close(self) -> None:
        """End the fork server (it kills any child left, which the grader has normally stopped already)."""
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=STOP_GRACE_SECONDS)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Forked:
    """A start forked by the fork server: signalled by pid, its exit status reported by the server."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self.server, self.pid = server, pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.pid)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        code = self.server.exit_code(self.pid, timeout)
        if code is None:
            if self.server.process.poll() is not None:  # the server died and took its children with it
                self.returncode = -signal.SIGKILL
                return self.returncode
            raise subprocess.TimeoutExpired(["forked stage", str(self.pid)], timeout or 0.0)
        self.returncode = code
        return code


def stage_env(settings: dict[str, str]) -> dict[str, str]:
    """The process environment: ours without the model settings, then the grading profile's settings."""
    inherited = {key: value for key, value in os.environ.items() if not key.startswith(_NOT_INHERITED)}
    return {**inherited, **settings}


@asynccontextmanager
async def run_stage(
    stage: Path,
    settings: dict[str, str],
    *,
    start_timeout: float,
    command: list[str] | None = None,
    server: ForkServer | None = None,
) -> AsyncIterator[RunningStage]:
    """Start the stage with `settings`, wait until it answers GET /health, yield it, then stop it.

    By default the stage runs as `uvicorn app.main:app` on a loopback socket the grader opened for it. A
    `command` of its own (the image's) must serve on the PORT that `settings` give, and may start worker
    processes: they share its process group. Its output goes to files in a temporary folder, removed once the
    stage has stopped. With a fork `server` (and no `command`), the uvicorn process is forked from it.
    """
    with tempfile.TemporaryDirectory(prefix="grader-log-") as temp:
        directory = Path(temp)
        log = StageLog(directory / "stdout.log", directory / "stderr.log")
        own = command is not None
        process: Process
        if server is not None and not own:
            # The server opens the listening socket, which only the child keeps: held from the start, too.
            process, port = await asyncio.to_thread(server.fork, stage_env(settings), log)
            queued = True
        else:
            held = None if own else _held_port()
            with held or contextlib.nullcontext():
                port, command = _serving(command, settings, held)
                process = _spawn(command, stage, stage_env(settings), log, group=own, keep=held)
            # Closed here: the stage has its own copy of the socket, so the port closes when the stage exits.
            queued = held is not None
        try:
            url = f"http://{HOST}:{port}"
            await _wait_until_answering(url, process, log, start_timeout, queued=queued)
            log.ready_at = log.stdout.stat().st_size
            yield RunningStage(url, process, log)
        finally:
            # In a thread, so that the grader's own endpoints (the OTLP collector) can still answer the
            # stage while it shuts down.
            await asyncio.to_thread(stop, process, STOP_GRACE_SECONDS, group=own)


def _serving(command: list[str] | None, settings: dict[str, str], held: socket.socket | None) -> tuple[int, list[str]]:
    """The port the stage will answer on, and the command that serves it there."""
    if command is not None:
        return int(settings["PORT"]), command
    uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app"]
    if held is None:
        port = free_port()
        return port, [*uvicorn, "--host", HOST, "--port", str(port)]
    port = held.getsockname()[1]
    return port, [*uvicorn, "--fd", str(held.fileno())]


def _spawn(
    command: list[str],
    stage: Path,
    env: dict[str, str],
    log: StageLog,
    *,
    group: bool = False,
    keep: socket.socket | None = None,
) -> subprocess.Popen[bytes]:
    """Start the command in the stage folder; `keep` is a socket it inherits (and no other child does)."""
    passed = () if keep is None else (keep.fileno(),)
    with open(log.stdout, "wb") as out, open(log.stderr, "wb") as err:
        # Our own interpreter with fixed arguments; the stage's code runs only inside that process (and, with
        # `group`, in the workers it starts, which stay in a process group of their own for stop() to end).
        return sandbox.Popen(  # contained: a private copy, its own environment and user, limits, no network
            command, cwd=stage, env=env, stdout=out, stderr=err, start_new_session=group, pass_fds=passed
        )


async def _wait_until_answering(
    url: str, process: Process, log: StageLog, seconds: float, *, queued: bool = False
) -> None:
    """Any HTTP answer from /health means the server runs; whether it is healthy is a check's business.

    On a socket the grader opened (`queued`) a request is accepted at once and waits until the stage serves
    it, so one request is enough. Asking again on a timer would leave abandoned requests queued, which the stage
    would then serve, log and count as if a check had sent them.
    """
    deadline = time.monotonic() + seconds
    timeout = httpx.Timeout(2.0, read=seconds) if queued else httpx.Timeout(2.0)
    async with httpx.AsyncClient(timeout=timeout) as client:
        while True:
            asking = asyncio.ensure_future(client.get(f"{url}/health"))
            try:
                while not asking.done():
                    if process.poll() is not None:
                        message = f"the stage exited with code {process.returncode} before it answered GET /health"
                        raise StageStartError(message, log.tail())
                    if time.monotonic() > deadline:
                        message = f"the stage did not answer GET /health within {seconds:g} s"
                        raise StageStartError(message, log.tail())
                    await asyncio.wait({asking}, timeout=0.1)
            finally:
                asking.cancel()
                await asyncio.gather(asking, return_exceptions=True)
            if not isinstance(asking.exception(), httpx.TransportError):
                asking.result()  # an answer: the stage serves (anything else the request raised, raised here)
                return
            await asyncio.sleep(0.1)


def stop(process: Process, grace: float = STOP_GRACE_SECONDS, *, group: bool = False) -> None:
    """SIGTERM the process we started, SIGKILL it if it is still there after `grace` seconds.

    With `group` (a process started in a session of its own), whatever is left of its group afterwards (a
    worker its master did not stop) is killed too.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    if group and hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
