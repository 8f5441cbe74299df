"""The LangGraph workflow, run with the offline model."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from app.agent import OfflineChatModel, build_agent_graph, default_tools

pytestmark = pytest.mark.anyio


def _graph() -> Any:
    return build_agent_graph(OfflineChatModel(), default_tools(), InMemorySaver())


async def _ask(
    graph: Any, question: str, thread: str = "t", max_iterations: int = 5
) -> tuple[dict[str, Any], list[str]]:
    config = {"configurable": {"thread_id": thread}, "recursion_limit": max_iterations + 1}
    nodes = []
    async for update in graph.astream({"messages": [HumanMessage(question)]}, config, stream_mode="updates"):
        nodes.extend(update)
    state = await graph.aget_state(config)
    return state.values, nodes


async def test_research_path_uses_the_calculator() -> None:
    """An arithmetic question goes supervisor, researcher, tools, researcher, writer, and the answer uses the result."""
    state, nodes = await _ask(_graph(), "What is 12 * 7?")
    assert nodes == ["supervisor", "researcher", "tools", "researcher", "writer"]
    assert state["messages"][-1].text == "12 * 7 = 84."


async def test_small_talk_skips_the_researcher() -> None:
    """A greeting goes straight from the supervisor to the writer."""
    state, nodes = await _ask(_graph(), "hello")
    assert nodes == ["supervisor", "writer"]
    assert state["messages"][-1].text.startswith("Hello!")


async def test_conversation_persists_across_turns_and_research_does_not() -> None:
    """The checkpointer keeps the conversation per thread; each turn starts with empty research."""
    graph = _graph()
    await _ask(graph, "my name is Ada", thread="a")
    await _ask(graph, "What is 2 + 2?", thread="a")
    state, _ = await _ask(graph, "what is my name?", thread="a")
    assert state["messages"][-1].text == "Your name is Ada."
    assert [m.type for m in state["messages"]] == ["human", "ai"] * 3
    assert state["research"] == []
    other, _ = await _ask(graph, "what is my name?", thread="b")
    assert other["messages"][-1].text == "You have not told me your name in this session yet."


@pytest.mark.parametrize("max_iterations", [2, 3, 4])
async def test_small_budget_skips_research_and_says_so(max_iterations: int) -> None:
    """Without room for a research round the writer answers at once and says the budget ran out."""
    state, nodes = await _ask(_graph(), "What is 12 * 7?", max_iterations=max_iterations)
    assert nodes == ["supervisor", "writer"]
    assert "ran out of steps" in state["messages"][-1].text


async def test_budget_of_one_ends_without_running_past_it() -> None:
    """With one step the graph runs only the supervisor and ends cleanly (no recursion error)."""
    state, nodes = await _ask(_graph(), "What is 12 * 7?", max_iterations=1)
    assert nodes == ["supervisor"]
    assert state["budget_exhausted"] is True


async def test_routing_between_steps_never_leaves_the_event_loop() -> None:
    """The routers are coroutines: a plain function would run in the executor's threads, a hop per step."""
    submitted = []

    class Counting(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            submitted.append(fn)
            return super().submit(fn, *args, **kwargs)

    loop = asyncio.get_running_loop()
    executor = Counting(max_workers=1)
    loop.set_default_executor(executor)
    try:
        _, nodes = await _ask(_graph(), "hello")
    finally:
        loop.set_default_executor(ThreadPoolExecutor())
        executor.shutdown()
    assert nodes == ["supervisor", "writer"]
    assert submitted == []


async def test_only_the_writer_streams_tokens() -> None:
    """With messages streaming on, the writer's answer arrives in chunks; the routing and research calls are not
    streamed (their output is never shown), so no chunk of theirs goes through the callbacks."""
    config = {"configurable": {"thread_id": "s"}}
    chunked: dict[str, int] = {}
    turn = {"messages": [HumanMessage("What is 12 * 7?")]}
    async for message, metadata in _graph().astream(turn, config, stream_mode="messages"):
        if isinstance(message, AIMessageChunk):
            node = metadata["langgraph_node"]
            chunked[node] = chunked.get(node, 0) + 1
    assert set(chunked) == {"writer"} and chunked["writer"] > 1, chunked
