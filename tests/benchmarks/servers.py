"""The servers a benchmark runs: the advanced solution and the bare baseline, each a real uvicorn process."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.stage import ROOT, StageProcess, free_port, run_stage, stop

SOLUTION = ROOT / "solutions" / "advanced"
DEMO_USER = ("demo", "demo-password")
# High enough that the limiter runs its script on every request but never refuses one.
NEVER_REFUSE = 100_000_000


def solution_env(
    redis_url: str,
    database: Path,
    *,
    first_token_delay_ms: float | None = 0,
    token_delay_ms: float | None = 0,
    rate_limit: int = NEVER_REFUSE,
) -> dict[str, str]:
    """The production stack's settings: auth, rate limit, cache, metrics and JSON logs on; the offline model
    with the delays given (None: the solution's default)."""
    env = {
        "ENVIRONMENT": "development",
        "SECRET_KEY": "bench-secret-key-not-the-default",
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "BCRYPT_ROUNDS": "4",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_REQUESTS": str(rate_limit),
        "RATE_LIMIT_WINDOW": "60",
        "CACHE_ENABLED": "true",
        "CACHE_TTL": "3600",
        "METRICS_ENABLED": "true",
        "TRACING_ENABLED": "false",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "LLM_PROVIDER": "offline",
    }
    if first_token_delay_ms is not None:
        env["OFFLINE_LLM_FIRST_TOKEN_DELAY_MS"] = str(first_token_delay_ms)
    if token_delay_ms is not None:
        env["OFFLINE_LLM_TOKEN_DELAY_MS"] = str(token_delay_ms)
    return env


@contextmanager
def solution(env: dict[str, str]) -> Iterator[StageProcess]:
    """The advanced solution as `uvicorn app.main:app` with one worker; its JSON log goes to a temp file."""
    with run_stage(SOLUTION, env, workers=1, timeout=60) as stage:
        yield stage


@contextmanager
def baseline(redis_url: str, timeout: float = 30) -> Iterator[tuple[str, int]]:
    """The baseline app as `uvicorn --workers 1 --no-access-log`; yields its base URL and PID, then stops it."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.benchmarks.baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_health(url, process, timeout)
            yield url, process.pid
        except RuntimeError:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-4000:])
            raise
        finally:
            stop(process)


def cpu_seconds(pid: int) -> float | None:
    """The CPU time (user + system) a process has used so far, from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command name: state is field 3 of stat(5), utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for_health(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Return once GET /health answers; raise if the process exits or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} before answering /health")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer /health within {timeout:g} s")


def login(url: str, username: str = DEMO_USER[0], password: str = DEMO_USER[1]) -> str:
    """A bearer token for the user."""
    response = httpx.post(f"{url}/api/v1/auth/login", data={"username": username, "password": password}, timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def machine() -> str:
    """Cores, memory, Python and OS of this machine, and its load right now."""
    cores = os.cpu_count() or 0
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    memory_gib = pages * page_size / 2**30
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    system = f"{os.uname().sysname} {os.uname().release}"
    python = sys.version.split()[0]
    return f"{cores} cores, {memory_gib:.1f} GiB RAM, Python {python}, {system}; load average {load}"
