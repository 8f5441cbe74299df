"""What the notebooks share: run a lab stage as a real uvicorn process, a throwaway redis-server, and read SSE."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx

ROOT = Path(__file__).resolve().parent.parent
STAGE_VARIABLE = "LAB_STAGE"  # the environment variable that points every notebook at another stage


def resolve_stage(stage: str | os.PathLike[str]) -> Path:
    """The stage folder: absolute, or relative to the repository root; it must hold app/main.py."""
    path = Path(stage).expanduser()
    path = (path if path.is_absolute() else ROOT / path).resolve()
    if not (path / "app" / "main.py").is_file():
        raise FileNotFoundError(f"{path} is not a stage: it has no app/main.py")
    return path


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A stage running as `uvicorn app.main:app` on 127.0.0.1: where it answers, its process and its log."""

    stage: Path
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, **options: Any) -> httpx.Client:
        """An HTTP client for this service (a 30 s timeout unless `options` say otherwise)."""
        return httpx.Client(base_url=self.url, **{"timeout": 30.0, **options})

    def async_client(self, **options: Any) -> httpx.AsyncClient:
        """An async HTTP client for this service (a 30 s timeout unless `options` say otherwise)."""
        return httpx.AsyncClient(base_url=self.url, **{"timeout": 30.0, **options})

    def log(self) -> str:
        """Everything the service has printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM the process, SIGKILL it if it outlives `grace` seconds; its exit code. Safe to call twice."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        return self.process.returncode


def start(stage: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, timeout: float = 30.0) -> Service:
    """Start the stage on a free port with `env` on top of this process's environment; return once /health answers.

    The process is also stopped when the interpreter exits, so a notebook that fails halfway leaks nothing.
    """
    folder = resolve_stage(stage)
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.NamedTemporaryFile(prefix=f"{folder.name}-", suffix=".log", delete=False) as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter, fixed arguments
            command,
            cwd=folder,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = Service(folder, f"http://127.0.0.1:{port}", process, Path(log.name))
    # Reap the process the moment it exits: a kernel shutting down waits for its children, zombies included.
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
    atexit.register(_discard, service)
    try:
        _wait_for_health(service, timeout)
    except BaseException:
        service.stop()
        raise
    return service


@contextmanager
def running(
    stage: str | os.PathLike[str], env: Mapping[str, str] | None = None, *, timeout: float = 30.0
) -> Iterator[Service]:
    """`start` the stage for the body of a `with` block, and stop it when the block ends."""
    service = start(stage, env, timeout=timeout)
    try:
        yield service
    finally:
        service.stop()


def _wait_for_health(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise RuntimeError(
                f"{service.stage.name} exited with {service.process.returncode} before answering /health; "
                f"its log ends with:\n{_tail(service.log())}"
            )
        try:
            if httpx.get(f"{service.url}/health", timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.stage.name} did not answer /health within {timeout:g} s:\n{_tail(service.log())}")


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _discard(service: Service) -> None:
    service.stop()
    service.log_path.unlink(missing_ok=True)


@dataclass
class RedisServer:
    """A throwaway `redis-server` on 127.0.0.1 that keeps nothing on disk; stop it and start it again at will."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The REDIS_URL that points a stage at this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server on its port (the same one each time) and return once it answers PING."""
        if self.is_running():
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed (for example: apt install redis-server)")
        # No snapshots and no append-only file: a restart starts empty, like a cache server that lost its memory.
        command = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.workdir), "--loglevel", "warning"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        self.process = process
        threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode} on port {self.port}")
            if self._pong():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout:g} s")

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the server by its PID (SIGKILL after `grace` seconds); its exit code. Safe to call twice."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        return self.process.returncode

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_redis(timeout: float = 10.0) -> RedisServer:
    """A running redis-server on a free loopback port; FileNotFoundError when it is not installed.

    It is also stopped when the interpreter exits, like the services.
    """
    server = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="notebook-redis-")))
    atexit.register(_discard_redis, server)
    server.start(timeout)
    return server


def _discard_redis(server: RedisServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


class SSEEvent(NamedTuple):
    """One Server-Sent Event: seconds since the request was sent, its type, and its data (JSON decoded)."""

    elapsed: float
    event: str
    data: Any


def sse_events(
    client: httpx.Client, path: str, payload: Mapping[str, Any], *, max_events: int = 10_000
) -> Iterator[SSEEvent]:
    """POST `payload` to `path` and yield each event as it arrives; an error status raises HTTPStatusError."""
    started = time.perf_counter()
    with client.stream("POST", path, json=dict(payload)) as response:
        if response.is_error:
            response.read()
            response.raise_for_status()
        parser = _SSEParser(max_events)
        for line in response.iter_lines():
            if (event := parser.feed(line)) is not None:
                yield SSEEvent(time.perf_counter() - started, *event)


async def asse_events(
    client: httpx.AsyncClient, path: str, payload: Mapping[str, Any], *, max_events: int = 10_000
) -> AsyncIterator[SSEEvent]:
    """The same as `sse_events`, for an async client (to follow many streams at once)."""
    started = time.perf_counter()
    async with client.stream("POST", path, json=dict(payload)) as response:
        if response.is_error:
            await response.aread()
            response.raise_for_status()
        parser = _SSEParser(max_events)
        async for line in response.aiter_lines():
            if (event := parser.feed(line)) is not None:
                yield SSEEvent(time.perf_counter() - started, *event)


class _SSEParser:
    """Gathers an event's fields line by line until a blank line completes it (the SSE wire format)."""

    def __init__(self, max_events: int) -> None:
        self._event = "message"
        self._data: list[str] = []
        # An event is an `event:` line, a `data:` line and a blank one; the rest is room for keep-alive comments.
        self._lines_left = 4 * max_events

    def feed(self, line: str) -> tuple[str, Any] | None:
        """Take one line; return (event, data) when it completes an event."""
        self._lines_left -= 1
        if self._lines_left < 0:
            raise RuntimeError("the stream sent far more events than expected and did not end")
        if line.startswith(":"):  # a comment, such as a keep-alive ping
            return None
        if line:
            name, _, value = line.partition(":")
            if name == "event":
                self._event = value.removeprefix(" ")
            elif name == "data":
                self._data.append(value.removeprefix(" "))
            return None
        event, text = self._event, "\n".join(self._data)
        self._event, self._data = "message", []
        if not text:
            return None
        try:
            return event, json.loads(text)
        except json.JSONDecodeError:
            return event, text
