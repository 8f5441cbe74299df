"""The load test (advanced lab): the stage's own locustfile, run headless against it, meets and enforces budgets.

Two runs, side by side, of `python -m locust` (the grader's interpreter) with the stage's locustfile: one
within generous budgets, one with a p95 budget no service can meet. Each is stopped (SIGTERM: Locust then
ends the run as at its time limit, budgets included) as soon as its statistics show what it must judge, so
a quiet machine grades in seconds and a busy one still gets its requests made. Both run `alongside` the
checks after them: they time nothing the other checks judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass, field

from .. import hints
from ..context import LOGIN_PATH, Context
from ..core import ADVANCED, check
from ..expect import shorten, that
from ..runner import stage_env

LOCUSTFILE = "locustfile.py"
QUERY_PATH = "/api/v1/query"
FAILED_LINE = "LOAD BUDGET FAILED"
RUN_TIME_SECONDS = 20  # Locust's own limit, if the requests never show up
HARD_TIMEOUT_SECONDS = 40  # then the process is killed
LINE_LIMIT = 1 << 20  # the longest output line read (a locustfile may print what it likes)
# A row of Locust's statistics table, printed every 2 s and at the end: `POST /path  12  0(0.00%) | ...`.
STATS_ROW = re.compile(r"^(?P<method>[A-Z]+)\s+(?P<name>\S+)\s+(?P<requests>\d+)\s+(?P<failures>\d+)\(")


@dataclass(frozen=True)
class Plan:
    """A run of the locustfile: its users, its budgets, and what it must have requested before it is stopped."""

    users: int
    budgets: dict[str, str]
    wanted: tuple[str, ...]
    min_seconds: float


# Generous budgets that a working service meets; then a p95 budget below any request's latency.
CLEAN = Plan(2, {"LOAD_MAX_ERROR_RATE": "0", "LOAD_MAX_P95_MS": "60000"}, (LOGIN_PATH, QUERY_PATH), 3.0)
OVER_BUDGET = Plan(1, {"LOAD_MAX_ERROR_RATE": "1", "LOAD_MAX_P95_MS": "1"}, (LOGIN_PATH,), 1.0)


@dataclass
class LocustRun:
    """What one run did: its exit status (None: it had to be killed), its output, and its requests."""

    exit_code: int | None = None
    lines: list[str] = field(default_factory=list)
    requests: dict[str, tuple[int, int]] = field(default_factory=dict)  # "POST /path" -> (requests, failures)

    def read(self, line: str) -> None:
        self.lines.append(line)
        if row := STATS_ROW.match(line):
            name, counts = f"{row['method']} {row['name']}", (int(row["requests"]), int(row["failures"]))
            self.requests[name] = max(counts, self.requests.get(name, (0, 0)))  # the tables are cumulative

    def made(self, path: str) -> int:
        return sum(requests for name, (requests, _) in self.requests.items() if name.endswith(f" {path}"))

    def failures(self) -> dict[str, int]:
        return {name: failed for name, (_, failed) in self.requests.items() if failed}

    def tail(self) -> str:
        return shorten("".join(self.lines)[-600:], 300) or "(no output)"


async def _locust(ctx: Context, plan: Plan) -> LocustRun:
    users = str(plan.users)
    command = [sys.executable, "-m", "locust", "-f", str(ctx.stage / LOCUSTFILE), "--headless", "--host", ctx.url]
    command += ["--users", users, "--spawn-rate", users, "--run-time", f"{RUN_TIME_SECONDS}s"]
    env = stage_env(plan.budgets | {"PYTHONUNBUFFERED": "1"})  # each statistics table as soon as it is printed
    pipe, merged = asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ctx.stage, env=env, stdout=pipe, stderr=merged, limit=LINE_LIMIT
    )
    assert process.stdout is not None
    run, started, stopping = LocustRun(), time.monotonic(), False
    try:
        async with asyncio.timeout(HARD_TIMEOUT_SECONDS):
            async for raw in process.stdout:
                run.read(raw.decode(errors="replace"))
                enough = all(run.made(path) for path in plan.wanted)
                if enough and not stopping and time.monotonic() - started >= plan.min_seconds:
                    with contextlib.suppress(ProcessLookupError):  # it may have ended by itself just now
                        process.send_signal(signal.SIGTERM)
                    stopping = True
            run.exit_code = await process.wait()
    except TimeoutError:
        run.lines.append(f"\n(killed: still running after {HARD_TIMEOUT_SECONDS} s)")
    finally:
        if process.returncode is None:  # killed above, or the grade was interrupted
            process.kill()
            await process.wait()
    return run


@dataclass
class Runs:
    clean: LocustRun
    over_budget: LocustRun


async def _runs(ctx: Context) -> Runs:
    async def both() -> Runs:
        clean, over = await asyncio.gather(_locust(ctx, CLEAN), _locust(ctx, OVER_BUDGET))
        return Runs(clean, over)

    return await ctx.memo("locust-runs", both)


def _cause(run: LocustRun) -> str:
    output = "".join(run.lines)
    if "No module named locust" in output:
        return "the grader's own environment lacks Locust (pip install locust): tell your instructor"
    return "the locustfile raised (see its output)" if "Traceback" in output else ""


@check(2, labs=ADVANCED, depends_on=("api.query_shape",), timeout=60, hint=hints.LOAD_RUN, retry=True)
async def clean_run(ctx: Context) -> None:
    """The stage's locustfile, run with 2 users until they have logged in and asked, has no failure and exits 0."""
    run = (await _runs(ctx)).clean
    that(run.requests, "Locust's statistics of the run", f"none; its output ends: {run.tail()}", cause=_cause(run))
    made = {"login": run.made(LOGIN_PATH), "query": run.made(QUERY_PATH)}
    that(all(made.values()), f"requests to {LOGIN_PATH} and {QUERY_PATH}", f"{made}; all: {sorted(run.requests)}")
    that(not run.failures(), "no failed request", f"failures: {run.failures()}")
    that(run.exit_code == 0, "exit status 0 (no budget broken)", f"{run.exit_code}; output ends: {run.tail()}")


@check(2, labs=ADVANCED, depends_on=("api.query_shape",), timeout=60, hint=hints.LOAD_BUDGET)
async def budget_enforced(ctx: Context) -> None:
    """With LOAD_MAX_P95_MS=1, a budget no service meets, the run exits 1 and prints LOAD BUDGET FAILED: ...p95."""
    run = (await _runs(ctx)).over_budget
    line = next((line.strip() for line in run.lines if FAILED_LINE in line), "")
    printed = f"printed {line!r}" if line else f"no {FAILED_LINE} line"
    expected = f"exit status 1 and a line {FAILED_LINE}: <the broken budgets>"
    that(run.exit_code == 1 and line, expected, f"exit status {run.exit_code}, {printed}", cause=_cause(run))
    that("p95" in line.lower(), "the line naming the p95 as the broken budget", line)
