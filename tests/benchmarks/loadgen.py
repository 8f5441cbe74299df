"""HTTP load generators over loopback: wrk (with a Lua script for the POST) or, without it, an httpx client."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx

# wrk prints times as 812.00us, 1.20ms, 2.00s, 1.00m; these are the units' sizes in milliseconds.
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([\d.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(rf"^\s*(50|99)(?:\.0+)?%\s+{_TIME}\s*$", re.MULTILINE)
_TOTAL = re.compile(rf"^\s*(\d+) requests in {_TIME}", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
MAX_REQUESTS_PER_WORKER = 10_000_000  # bounds the Python generator's loop besides its deadline


@dataclass(frozen=True)
class Target:
    """One request, sent again and again: its URL, JSON body and headers."""

    name: str
    url: str
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadResult:
    """What one timed run measured."""

    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int


class LoadGenerator(Protocol):
    """Drives one target for some seconds with a fixed number of connections."""

    @property
    def description(self) -> str: ...

    def run(self, target: Target, seconds: int) -> LoadResult: ...


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS_MS[unit]


def parse_wrk(output: str) -> LoadResult:
    """The numbers of `wrk --latency` output; ValueError when a number is missing."""
    percentiles = {match[1]: _ms(match[2], match[3]) for match in _PERCENTILE.finditer(output)}
    total, rate = _TOTAL.search(output), _RATE.search(output)
    if total is None or rate is None or set(percentiles) != {"50", "99"}:
        raise ValueError(f"not the output of wrk --latency:\n{output}")
    non_2xx = _NON_2XX.search(output)
    socket_errors = _SOCKET_ERRORS.search(output)
    return LoadResult(
        requests=int(total[1]),
        seconds=_ms(total[2], total[3]) / 1000,
        requests_per_second=float(rate[1]),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        errors=sum(int(count) for count in socket_errors.groups()) if socket_errors else 0,
    )


def _lua_string(text: str) -> str:
    """A Lua long-bracket literal holding text verbatim."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def wrk_script(target: Target) -> str:
    """The Lua script that makes wrk send the target's POST."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(target.body)}"]
    headers = {"Content-Type": "application/json", **target.headers}
    # The spaces matter: `[[[` would open a long string.
    lines += [f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


class Wrk:
    """wrk, one thread per core it may use, a fixed number of keep-alive connections."""

    def __init__(self, executable: str, *, threads: int = 1, connections: int = 16) -> None:
        self.executable = executable
        self.threads, self.connections = threads, connections
        version = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10, check=False)
        self.version = (version.stdout + version.stderr).split("Copyright")[0].strip()

    @property
    def description(self) -> str:
        return f"{self.version} at {self.executable}, {self.threads} thread(s), {self.connections} connections"

    def run(self, target: Target, seconds: int) -> LoadResult:
        with tempfile.TemporaryDirectory(prefix="bench-wrk-") as folder:
            script = Path(folder) / "post.lua"
            script.write_text(wrk_script(target))
            command = [self.executable, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s"]
            command += ["--latency", "--timeout", "10s", "-s", str(script), target.url]
            done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
        return parse_wrk(done.stdout)


class PythonClient:
    """An asyncio httpx client with `connections` concurrent workers: the fallback where wrk is missing.

    It costs far more CPU per request than wrk, on the same cores as the server: its ceiling is lower.
    """

    def __init__(self, *, connections: int = 16) -> None:
        self.connections = connections

    @property
    def description(self) -> str:
        return (
            f"Python httpx {httpx.__version__} async client (wrk not found or not chosen), {self.connections} "
            "connections; its own CPU cost caps the baseline's number, so the ratio reads higher than with wrk"
        )

    def run(self, target: Target, seconds: int) -> LoadResult:
        return asyncio.run(self._run(target, seconds))

    async def _run(self, target: Target, seconds: int) -> LoadResult:
        latencies: list[float] = []
        counts = {"non_2xx": 0, "errors": 0}
        headers = {"Content-Type": "application/json", **target.headers}
        limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
        started = time.perf_counter()
        deadline = started + seconds
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:

            async def worker() -> None:
                for _ in range(MAX_REQUESTS_PER_WORKER):
                    if time.perf_counter() >= deadline:
                        return
                    sent = time.perf_counter()
                    try:
                        response = await client.post(target.url, content=target.body, headers=headers)
                    except httpx.HTTPError:
                        counts["errors"] += 1
                        continue
                    latencies.append((time.perf_counter() - sent) * 1000)
                    if not 200 <= response.status_code < 400:
                        counts["non_2xx"] += 1

            await asyncio.gather(*(worker() for _ in range(self.connections)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return LoadResult(
            requests=len(latencies),
            seconds=elapsed,
            requests_per_second=len(latencies) / elapsed,
            p50_ms=percentile(latencies, 50),
            p99_ms=percentile(latencies, 99),
            non_2xx=counts["non_2xx"],
            errors=counts["errors"],
        )


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank q-th percentile of sorted values (nan for none)."""
    if not ordered:
        return math.nan
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def load_generator(choice: str, *, threads: int, connections: int) -> LoadGenerator:
    """wrk when chosen or found (`auto`), else the Python client."""
    executable = shutil.which("wrk")
    if choice == "wrk" and executable is None:
        raise SystemExit("--loadgen wrk: wrk is not installed (Debian: apt-get install wrk)")
    if choice != "python" and executable is not None:
        return Wrk(executable, threads=threads, connections=connections)
    return PythonClient(connections=connections)
