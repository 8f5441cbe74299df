"""What one graph step costs before the first token: the course's graph against the same graph with the
supervisor's routing done in START's conditional edge, one step fewer.

Section 10 of the results page suggested that making the supervisor's routing a plain call rather than a graph
step could bring the time to first token closer to its goal. This measures that suggestion before anyone
changes the course's graph for it. Both graphs run in this process, warm, on the offline model with no delay,
the same checkpointer kind and the stream modes the service uses; a question that goes supervisor -> writer is
timed from the start of `astream` to the writer's first token, the two graphs alternated, medians printed
side by side.

The variant leaves out the supervisor's step-budget bookkeeping, so it does a little less work than a real
replacement would: the saving it shows is an upper bound.
"""

import argparse
import asyncio
import importlib
import statistics
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.servers import SOLUTION

QUESTION = "hello"  # routed straight to the writer
T = TypeVar("T")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=400, help="timed runs of each graph (default 400)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed runs of each graph first (default 50)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    medians = asyncio.run(compare(args.runs, args.warmup))
    course, variant = medians["course"], medians["variant"]
    print(f"time from astream() to the writer's first token, median of {args.runs} runs each, alternated:")
    print(f"  course graph (supervisor node -> writer):          {course:.3f} ms")
    print(f"  routing in START's edge (writer is the first step): {variant:.3f} ms")
    print(f"  one step fewer saves {course - variant:.3f} ms ({(course - variant) / course:.0%} of the graph's part)")
    return medians


def run_like_a_worker(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, as uvicorn does where it is installed (not on Windows); else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def agent_module(name: str = "app.agent") -> Any:
    """A module of the advanced solution's agent (the agent is the same in every tree)."""
    if str(SOLUTION) not in sys.path:
        sys.path.insert(0, str(SOLUTION))
    return importlib.import_module(name)


def _zero_delay_model() -> Any:
    return agent_module().OfflineChatModel(first_token_delay_ms=0, token_delay_ms=0)


def course_graph(model: Any = None) -> Any:
    """The course's graph, compiled as the service compiles it, on the offline model given (else one with no
    delay) and with its checkpoints in memory."""
    from langgraph.checkpoint.memory import InMemorySaver

    agent = agent_module()
    return agent.build_agent_graph(model or _zero_delay_model(), agent.default_tools(), InMemorySaver())


def build_graphs() -> dict[str, Any]:
    """The course's graph and the variant, on zero-delay offline models, each with its own checkpointer."""
    from langchain_core.messages import SystemMessage
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph

    course = agent_module("app.agent.graph")
    compiled = course_graph()
    router = _zero_delay_model().bind_tools([course.route], tool_choice="route", stream=False)

    async def routing(state: dict[str, Any], config: RunnableConfig) -> str:
        decision = await router.ainvoke([SystemMessage(course.SUPERVISOR_PROMPT), *state["messages"]], config)
        wants_research = any(call["args"].get("next") == course.RESEARCHER for call in decision.tool_calls)
        return str(course.RESEARCHER if wants_research else course.WRITER)

    variant = StateGraph(course.AgentState)
    for name in (course.RESEARCHER, course.TOOLS, course.WRITER):  # the course graph's own nodes
        variant.add_node(name, compiled.builder.nodes[name].runnable)
    variant.add_conditional_edges(START, routing, [course.RESEARCHER, course.WRITER])
    variant.branches[course.RESEARCHER] = compiled.builder.branches[course.RESEARCHER]  # the course's own routing
    variant.add_edge(course.TOOLS, course.RESEARCHER)
    variant.add_edge(course.WRITER, END)
    return {"course": compiled, "variant": variant.compile(checkpointer=InMemorySaver())}


async def first_token_ms(graph: Any, thread_id: str) -> float:
    """One new conversation's run, as the service streams it, until the writer's first token."""
    from langchain_core.messages import HumanMessage

    config = {"configurable": {"thread_id": thread_id}, "recursion_limit": 6}
    started = time.perf_counter()
    turn = {"messages": [HumanMessage(QUESTION)]}
    stream = graph.astream(turn, config, stream_mode=["messages", "updates"], durability="exit")
    try:
        async for mode, payload in stream:
            if mode == "messages" and payload[1].get("langgraph_node") == "writer" and payload[0].text:
                return (time.perf_counter() - started) * 1000
    finally:
        await stream.aclose()
    raise RuntimeError(f"{thread_id}: the writer sent no token")


async def compare(runs: int, warmup: int) -> dict[str, float]:
    graphs = build_graphs()
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for index in range(warmup + runs):
        for name, graph in graphs.items():
            elapsed = await first_token_ms(graph, f"{name}-{index}")
            if index >= warmup:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
