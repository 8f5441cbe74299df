"""Run a lab stage as a real `uvicorn app.main:app` process on a free loopback port, and stop it by PID."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class StageProcess:
    """A running stage: its URL, its process and the file its output goes to."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the stage has printed so far."""
        return self.log_path.read_text(errors="replace")


def _wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stage exited with {process.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"the stage did not answer /health within {timeout:g} s")


@contextmanager
def run_stage(
    stage: Path, env: dict[str, str] | None = None, *, workers: int = 1, timeout: float = 30
) -> Iterator[StageProcess]:
    """Start the stage with the environment given (on top of a clean one), yield it, then stop it."""
    port = free_port()
    base_env = {key: value for key, value in os.environ.items() if not key.startswith(("OPENAI_", "LLM_"))}
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    with tempfile.NamedTemporaryFile(prefix="stage-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            command, cwd=stage, env={**base_env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(url, process, timeout)
        yield StageProcess(url, process, log_path)
    finally:
        stop(process)
        log_path.unlink(missing_ok=True)


def stop(process: subprocess.Popen[bytes], grace: float = 10) -> int:
    """SIGTERM the process we started, SIGKILL it if it lingers; return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode
