"""Uncached agent latency: many concurrent queries against one, and SSE time to the first token."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass

import httpx

GREETING = "hello"  # the supervisor routes it straight to the writer: two model calls before its first token
MODEL_CALLS_BEFORE_FIRST_TOKEN = 2  # the supervisor's routing call, then the writer's first token


def uncached_question(index: int) -> str:
    """A question of its own (so never a cache hit) that takes the full research path."""
    return f"What is {index} * 7 + 1?"


@dataclass(frozen=True)
class Concurrency:
    """Wall times of one uncached query (the median of a few) and of `count` concurrent ones."""

    single_seconds: float
    concurrent_seconds: float
    count: int
    problems: list[str]

    @property
    def ratio(self) -> float:
        return self.concurrent_seconds / self.single_seconds


async def _ask(client: httpx.AsyncClient, question: str, problems: list[str]) -> None:
    response = await client.post("/api/v1/query", json={"query": question})
    if response.status_code != 200 or response.headers.get("X-Cache") != "MISS":
        problems.append(f"{question!r}: {response.status_code} X-Cache={response.headers.get('X-Cache')}")


def _client(url: str, token: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60)


async def _concurrency(url: str, token: str, count: int, singles: int, first: int) -> Concurrency:
    problems: list[str] = []
    async with _client(url, token, count) as client:
        await _ask(client, uncached_question(first + 10_000), problems)  # warm-up: first-use costs are not the point
        times = []
        for index in range(singles):
            started = time.perf_counter()
            await _ask(client, uncached_question(first + 10_001 + index), problems)
            times.append(time.perf_counter() - started)
        # Open the connections first, so the concurrent run measures the service and not TCP handshakes.
        await asyncio.gather(*(client.get("/health") for _ in range(count)))
        started = time.perf_counter()
        await asyncio.gather(*(_ask(client, uncached_question(first + index), problems) for index in range(count)))
        concurrent = time.perf_counter() - started
    return Concurrency(statistics.median(times), concurrent, count, problems)


def measure_concurrency(url: str, token: str, *, count: int = 50, singles: int = 3, first: int = 0) -> Concurrency:
    """One uncached query at a time (median of `singles`), then `count` different ones at once; the questions
    are numbered from `first`, so that runs with different `first` values never meet each other's answers."""
    return asyncio.run(_concurrency(url, token, count, singles, first))


@dataclass(frozen=True)
class FirstToken:
    """One stream's time to its first token, and the graph steps that finished before it."""

    milliseconds: float
    steps_before: tuple[str, ...]


async def _first_token(client: httpx.AsyncClient, path: str = "/api/v1/query/stream") -> FirstToken:
    started = time.perf_counter()
    steps: list[str] = []
    event = ""
    async with client.stream("POST", path, json={"query": GREETING}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"POST {path} answered {response.status_code}")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
                if event == "token":
                    return FirstToken((time.perf_counter() - started) * 1000, tuple(steps))
            elif line.startswith("data: ") and event == "step":
                steps.append(json.loads(line.removeprefix("data: "))["content"])
            elif line.startswith("data: ") and event in ("done", "error"):
                raise RuntimeError(f"POST {path}: its `{event}` event came before any token: {line}")
    raise RuntimeError(f"POST {path}: the stream ended without a token (steps: {steps})")


@dataclass(frozen=True)
class StreamTarget:
    """A server to time streams of: its URL, a token (or ""), and the stream's path."""

    url: str
    token: str
    path: str = "/api/v1/query/stream"


def measure_ttft_in_turns(targets: list[StreamTarget], *, samples: int = 5) -> list[list[FirstToken]]:
    """Time to the first token of each target, one stream at a time, the targets in turns (A B A B ...)."""
    return asyncio.run(_ttft_in_turns(targets, samples))


async def _ttft_in_turns(targets: list[StreamTarget], samples: int) -> list[list[FirstToken]]:
    clients = [_client(target.url, target.token, 1) for target in targets]
    try:
        for client, target in zip(clients, targets, strict=True):
            await _first_token(client, target.path)  # warm-up, and a kept-alive connection for the samples
        times: list[list[FirstToken]] = [[] for _ in targets]
        for _ in range(samples):
            for client, target, measured in zip(clients, targets, times, strict=True):
                measured.append(await _first_token(client, target.path))
        return times
    finally:
        for client in clients:
            await client.aclose()


def measure_ttft(url: str, token: str, *, samples: int = 5) -> list[FirstToken]:
    """Milliseconds from sending the stream request to its first `event: token` line, one stream at a time."""
    return measure_ttft_in_turns([StreamTarget(url, token)], samples=samples)[0]
