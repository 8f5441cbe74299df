"""The offline chat model: deterministic replies, streaming with delays, usage and tool calls."""

import time
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage

from app.agent import OfflineChatModel, default_tools
from app.agent.graph import route
from app.agent.offline import split_tokens
from app.agent.offline_replies import find_expressions, needs_research

pytestmark = pytest.mark.anyio


async def _stream(model: Any, messages: list[Any]) -> tuple[list[AIMessageChunk], AIMessageChunk]:
    chunks = [chunk async for chunk in model.astream(messages)]
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return chunks, total


async def test_streamed_pieces_join_to_the_invoked_answer() -> None:
    """Streaming yields several text pieces whose concatenation equals the non-streamed answer."""
    model = OfflineChatModel()
    messages = [HumanMessage("hello there")]
    invoked = await model.ainvoke(messages)
    chunks, _ = await _stream(model, messages)
    texts = [chunk.text for chunk in chunks if chunk.text]
    assert len(texts) > 5
    assert "".join(texts) == invoked.text
    assert invoked.text.startswith("Hello!")


async def test_usage_is_reported_streamed_and_not() -> None:
    """Both paths report input, output and total tokens, and they agree."""
    model = OfflineChatModel()
    messages = [HumanMessage("hello there")]
    invoked = await model.ainvoke(messages)
    _, total = await _stream(model, messages)
    assert invoked.usage_metadata is not None and total.usage_metadata is not None
    assert invoked.usage_metadata["input_tokens"] > 0
    assert invoked.usage_metadata["output_tokens"] == len(split_tokens(invoked.text))
    assert invoked.usage_metadata["total_tokens"] == total.usage_metadata["total_tokens"]


async def test_replies_are_deterministic() -> None:
    """The same input gives the same answer."""
    model = OfflineChatModel()
    question = [HumanMessage("What is (3 + 4) / 2 and what is SSE?")]
    tools = model.bind_tools(default_tools())
    first, second = await tools.ainvoke(question), await tools.ainvoke(question)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [(c["name"], c["args"]) for c in second.tool_calls]


async def test_bound_tools_yield_real_tool_calls() -> None:
    """With tools bound, arithmetic gets a calculator call and a course topic a notes lookup."""
    model = OfflineChatModel().bind_tools(default_tools())
    reply = await model.ainvoke([HumanMessage("What is 12 * 7, and how does rate limiting work?")])
    assert isinstance(reply, AIMessage)
    assert [(call["name"], call["args"]) for call in reply.tool_calls] == [
        ("calculator", {"expression": "12 * 7"}),
        ("search_course_notes", {"topic": "rate limiting"}),
    ]
    assert all(call["id"] for call in reply.tool_calls)


async def test_tool_calls_stream_as_tool_call_chunks() -> None:
    """Streaming a tool call aggregates to the same calls as invoking."""
    model = OfflineChatModel().bind_tools(default_tools())
    _, total = await _stream(model, [HumanMessage("compute 2 ** 10")])
    assert [(call["name"], call["args"]) for call in total.tool_calls] == [("calculator", {"expression": "2 ** 10"})]


async def test_forced_route_choice() -> None:
    """A forced `route` tool choice routes research questions to the researcher, others to the writer."""
    router = OfflineChatModel().bind_tools([route], tool_choice="route")
    research = await router.ainvoke([HumanMessage("what is 3 + 4?")])
    chat = await router.ainvoke([HumanMessage("hello")])
    assert research.tool_calls[0]["args"] == {"next": "researcher"}
    assert chat.tool_calls[0]["args"] == {"next": "writer"}


async def test_writer_uses_research_notes() -> None:
    """Without tools the model writes the answer from the notes it is given."""
    notes = "Research notes:\n- calculator(12 * 7): 84\n- current_time(): 2026-01-01T00:00:00+00:00"
    reply = await OfflineChatModel().ainvoke([SystemMessage(f"Write.\n\n{notes}"), HumanMessage("12 * 7?")])
    assert reply.text == "12 * 7 = 84. The current time is 2026-01-01T00:00:00+00:00 (UTC)."


async def test_researcher_summarises_tool_results() -> None:
    """After tool results the researcher reports what it gathered instead of calling again."""
    model = OfflineChatModel().bind_tools(default_tools())
    messages = [
        HumanMessage("What is 2 + 2?"),
        AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "2 + 2"}, "id": "c1"}]),
        ToolMessage("4", tool_call_id="c1", name="calculator"),
    ]
    reply = await model.ainvoke(messages)
    assert reply.tool_calls == []
    assert "calculator" in reply.text


async def test_first_token_delay_and_token_delay_apply() -> None:
    """The first piece waits the first-token delay; every call, streamed or not, takes its latency."""
    model = OfflineChatModel(first_token_delay_ms=150, token_delay_ms=10)
    started = time.perf_counter()
    async for chunk in model.astream([HumanMessage("hello")]):
        if chunk.text:
            first = time.perf_counter() - started
            break
    assert first >= 0.14
    started = time.perf_counter()
    reply = await model.ainvoke([HumanMessage("hello")])
    pieces = len(split_tokens(reply.text))
    assert time.perf_counter() - started >= 0.14 + 0.01 * (pieces - 1) * 0.9


def test_sync_invoke_works_too() -> None:
    """The synchronous API answers like the async one."""
    assert OfflineChatModel().invoke([HumanMessage("hi")]).text.startswith("Hello!")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is 12 * 7?", ["12 * 7"]),
        ("(3 + 4) / 2 please", ["(3 + 4) / 2"]),
        ("no maths here", []),
        ("1 / 0 is undefined", []),
    ],
)
def test_find_expressions(text: str, expected: list[str]) -> None:
    """Only expressions that evaluate are found, as written."""
    assert find_expressions(text) == expected


def test_needs_research() -> None:
    """Arithmetic, topics and time questions need research; small talk does not."""
    assert needs_research("what time is it")
    assert needs_research("explain JWT")
    assert not needs_research("how are you")
