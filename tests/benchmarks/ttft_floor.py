"""The first token's floor: what the model's calls and the course graph take in-process, with no service around.

`bench.py` compares the stack's first token with a bare SSE endpoint that only waits the model's delays, one
wait per model call. This takes the service away and asks how much of that overhead the graph needs by itself.
In this process (uvloop, as a worker runs), each after the same idle pause, in turns:

1. the waits alone: one `asyncio.sleep` of the model's delay per model call (two for `hello`);
2. the model alone: the supervisor's routing call, then the writer's call streamed to its first token,
   through LangChain as the graph makes them (the offline model, with the delay given);
3. the course graph, as the service streams it (checkpoints in memory), to the writer's first token.

(2) - (1) is the work of LangChain and the offline model around the waits. (3) - (1) is what the graph adds
to the first token before any HTTP, authentication, Redis or database: no service around this graph, on this
machine, can add less.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.agent_latency import MODEL_CALLS_BEFORE_FIRST_TOKEN
from tests.benchmarks.graph_steps import QUESTION, agent_module, course_graph, first_token_ms, run_like_a_worker


@dataclass(frozen=True)
class Floor:
    """Medians, in ms, of the three ways to the first token, each timed after the same idle pause."""

    waits: float
    model: float
    graph: float
    rounds: int

    @property
    def model_over_waits(self) -> float:
        return self.model - self.waits

    @property
    def graph_over_waits(self) -> float:
        return self.graph - self.waits


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds of the three (default 30)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first (default 5)")
    parser.add_argument("--delay-ms", type=float, default=200, help="the model's delay per call (default 200)")
    parser.add_argument("--idle-ms", type=float, default=200, help="the pause before each timing (default 200)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Floor:
    args = parse_args(argv)
    floor = measure(delay_ms=args.delay_ms, rounds=args.rounds, warmup=args.warmup, idle_ms=args.idle_ms)
    print(describe(floor, args.delay_ms, args.idle_ms))
    return floor


def measure(*, delay_ms: float, rounds: int, warmup: int = 5, idle_ms: float = 200) -> Floor:
    """The three medians, measured on the event loop a worker runs."""
    return run_like_a_worker(_measure(delay_ms, rounds, warmup, idle_ms / 1000))


def describe(floor: Floor, delay_ms: float, idle_ms: float) -> str:
    calls = MODEL_CALLS_BEFORE_FIRST_TOKEN
    rows: list[tuple[str, float, float | None]] = [
        (f"{calls} waits of {delay_ms:g} ms alone", floor.waits, None),
        (f"the model's {calls} calls alone (routing, then the writer's stream)", floor.model, floor.model_over_waits),
        ("the course graph (checkpoints in memory)", floor.graph, floor.graph_over_waits),
    ]
    lines = [
        f"the first token in this process, with no service around the graph (medians of {floor.rounds} rounds, "
        f"each timed after {idle_ms:g} ms idle):"
    ]
    for label, value, over_waits in rows:
        lines.append(f"  {label:<66} {value:8.2f} ms" + ("" if over_waits is None else f" (+{over_waits:.2f})"))
    lines.append(
        f"  the graph by itself adds {floor.graph_over_waits:.2f} ms to the model's waits, "
        f"{floor.model_over_waits:.2f} ms of it in the model's calls"
    )
    return "\n".join(lines)


async def _measure(delay_ms: float, rounds: int, warmup: int, idle_seconds: float) -> Floor:
    model = agent_module().OfflineChatModel(first_token_delay_ms=delay_ms, token_delay_ms=0)
    graph = course_graph(model)
    ways: dict[str, Callable[[int], Awaitable[float]]] = {
        "waits": lambda _: _waits(delay_ms / 1000),
        "model": _model_alone(model),
        "graph": lambda index: first_token_ms(graph, f"floor-{index}"),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for index in range(warmup + rounds):
        for name, way in ways.items():
            await asyncio.sleep(idle_seconds)
            elapsed = await way(index)
            if index >= warmup:
                times[name].append(elapsed)
    medians = {name: statistics.median(values) for name, values in times.items()}
    return Floor(waits=medians["waits"], model=medians["model"], graph=medians["graph"], rounds=rounds)


async def _waits(seconds: float) -> float:
    started = time.perf_counter()
    for _ in range(MODEL_CALLS_BEFORE_FIRST_TOKEN):
        await asyncio.sleep(seconds)
    return (time.perf_counter() - started) * 1000


def _model_alone(model: Any) -> Callable[[int], Awaitable[float]]:
    """The two calls the graph makes before the writer's first token, made directly, with the graph's prompts."""
    from langchain_core.messages import HumanMessage, SystemMessage

    course = agent_module("app.agent.graph")
    router = model.bind_tools([course.route], tool_choice="route", stream=False)

    async def calls(_: int) -> float:
        started = time.perf_counter()
        decision = await router.ainvoke([SystemMessage(course.SUPERVISOR_PROMPT), HumanMessage(QUESTION)])
        if not decision.tool_calls:
            raise RuntimeError("the routing call chose no route")
        async for chunk in model.astream([SystemMessage(course.WRITER_PROMPT), HumanMessage(QUESTION)]):
            if chunk.text:
                return (time.perf_counter() - started) * 1000
        raise RuntimeError("the writer's call streamed no token")

    return calls


if __name__ == "__main__":
    main()
