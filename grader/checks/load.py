"""Concurrency and load: many users at once must not wait for each other."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass

import httpx

from .. import hints
from ..context import Context
from ..core import Failure, check
from ..expect import nonce, that

CONCURRENT = 10
USERS, RUN_SECONDS, MAX_PER_USER = 10, 3.0, 10
# Bands, as multiples of one query's latency: wide enough for a busy 2-core machine, far below serial (x USERS).
P95_FULL, P95_HALF = 3.0, 6.0
ERRORS_FULL, ERRORS_HALF = 0.0, 0.05


async def _timed_query(client: httpx.AsyncClient) -> tuple[bool, float]:
    started = time.perf_counter()
    try:
        response = await client.post("/api/v1/query", json={"query": f"Hello [{nonce()}]"})
    except httpx.HTTPError:
        return False, time.perf_counter() - started
    return response.status_code == 200, time.perf_counter() - started


async def _single(ctx: Context) -> float:
    """One query's latency when the stage is otherwise idle: the median of three (api.query_shape, which every
    load check needs, has warmed the stage up)."""

    async def measure() -> float:
        return statistics.median([(await _timed_query(ctx.api))[1] for _ in range(3)])

    return await ctx.memo("single-latency", measure)


@check(4, depends_on=("api.query_shape",), timeout=60, hint=hints.CONCURRENCY, alone=True, retry=True)
async def concurrent(ctx: Context) -> None:
    """10 concurrent queries take about as long as one, not 10 times as long."""
    single = await _single(ctx)
    started = time.perf_counter()
    outcomes = await asyncio.gather(*(_timed_query(ctx.api) for _ in range(CONCURRENT)))
    elapsed = time.perf_counter() - started
    that(
        all(ok for ok, _ in outcomes),
        f"{CONCURRENT} answers with HTTP 200",
        f"{sum(not ok for ok, _ in outcomes)} failed",
    )
    bound = max(CONCURRENT * single / 3, single + 0.5)
    that(
        elapsed <= bound,
        f"{CONCURRENT} concurrent queries within {bound:.2f} s (one takes {single:.2f} s)",
        f"{elapsed:.2f} s: the queries waited for each other",
        cause="a blocking call (time.sleep, sync I/O, invoke instead of ainvoke) or a lock shared by all requests",
    )


@dataclass
class LoadRun:
    """What a bounded load run saw."""

    requests: int
    errors: int
    p95: float
    single: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


async def _load_run(ctx: Context) -> LoadRun:
    single = await _single(ctx)

    async def user(deadline: float) -> list[tuple[bool, float]]:
        outcomes: list[tuple[bool, float]] = []
        while time.monotonic() < deadline and len(outcomes) < MAX_PER_USER:
            outcomes.append(await _timed_query(ctx.api))
        return outcomes

    async def run() -> LoadRun:
        deadline = time.monotonic() + RUN_SECONDS
        outcomes = [o for per_user in await asyncio.gather(*(user(deadline) for _ in range(USERS))) for o in per_user]
        latencies = sorted(latency for ok, latency in outcomes if ok)
        p95 = latencies[max(math.ceil(0.95 * len(latencies)) - 1, 0)] if latencies else math.inf
        return LoadRun(len(outcomes), sum(not ok for ok, _ in outcomes), p95, single)

    return await ctx.memo("load-run", run)


@check(2, depends_on=("api.query_shape",), timeout=90, hint=hints.CONCURRENCY, alone=True, retry=True)
async def errors_under_load(ctx: Context) -> None:
    """A 3-second run of 10 users asking back to back gets no errors (half the points up to 5 %)."""
    run = await _load_run(ctx)
    observed = f"{run.errors} of {run.requests} requests failed ({run.error_rate:.1%})"
    if run.error_rate > ERRORS_FULL:
        credit = 0.5 if run.error_rate <= ERRORS_HALF else 0.0
        raise Failure("no failed request under load", observed, credit=credit)


@check(2, depends_on=("api.query_shape",), timeout=90, hint=hints.CONCURRENCY, alone=True, retry=True)
async def p95_under_load(ctx: Context) -> None:
    """Under that load, the p95 latency stays within 3 times one query's (half the points within 6 times)."""
    run = await _load_run(ctx)
    # The absolute slack keeps a very fast stage from failing on scheduling noise alone.
    full, half = max(P95_FULL * run.single, run.single + 0.5), max(P95_HALF * run.single, run.single + 1.5)
    if run.p95 > full:
        raise Failure(
            f"p95 within {full:.2f} s ({P95_FULL:g} x one query's {run.single:.2f} s)",
            f"p95 {run.p95:.2f} s over {run.requests} requests",
            cause="requests queue behind each other",
            credit=0.5 if run.p95 <= half else 0.0,
        )
