"""The agent service: sessions, concurrency, timeouts, failures and the step bound."""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from app.agent import OfflineChatModel
from app.agent_service import AgentService
from app.exceptions import AgentTimeoutError, SessionNotFoundError, UpstreamError
from app.models import QueryRequest

from .conftest import make_settings

pytestmark = pytest.mark.anyio


class FailingModel(OfflineChatModel):
    """Fails like an unreachable provider on the writer's call (the one without tools)."""

    async def _astream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if not kwargs.get("tools"):
            raise httpx.ConnectError("connection refused")
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk


async def test_process_query_answers_with_metadata() -> None:
    """A query returns the answer, its session, time, tokens and the agents visited."""
    service = AgentService(make_settings())
    answer = await service.process_query(QueryRequest(query="What is 6 * 7?"))
    assert answer.response == "6 * 7 = 42."
    assert answer.tokens_used > 0
    assert answer.execution_time > 0
    assert answer.metadata["agents"] == ["supervisor", "researcher", "writer"]
    assert answer.metadata["tools_used"] == ["calculator"]
    assert answer.metadata["provider"] == "offline"


async def test_concurrent_turns_on_one_session_lose_no_message() -> None:
    """Ten concurrent queries to one session all land: 20 messages, each question once."""
    service = AgentService(make_settings())
    questions = [f"What is {n} + {n}?" for n in range(10)]
    await asyncio.gather(*(service.process_query(QueryRequest(query=q, session_id="shared")) for q in questions))
    info = await service.get_session_info("shared")
    assert info.message_count == 20
    assert sorted(m.content for m in info.messages if m.role == "user") == sorted(questions)
    assert [m.role for m in info.messages] == ["user", "assistant"] * 10


async def test_concurrent_queries_do_not_block_each_other() -> None:
    """50 concurrent queries with a 200 ms model take about as long as one, not 50 times as long."""
    service = AgentService(make_settings(offline_llm_first_token_delay_ms=200, offline_llm_token_delay_ms=0))
    started = time.perf_counter()
    await service.process_query(QueryRequest(query="hello"))
    one = time.perf_counter() - started
    started = time.perf_counter()
    await asyncio.gather(*(service.process_query(QueryRequest(query="hello")) for _ in range(50)))
    fifty = time.perf_counter() - started
    # A generous bound: serialised runs would take about 50 times as long.
    assert fifty < one * 5, f"50 concurrent took {fifty:.2f}s, one took {one:.2f}s"


async def test_timeout_raises_agent_timeout_and_keeps_the_session_whole() -> None:
    """A run past AGENT_TIMEOUT_SECONDS raises AgentTimeoutError and leaves no half turn behind."""
    service = AgentService(make_settings(agent_timeout_seconds=0.2, offline_llm_first_token_delay_ms=500))
    with pytest.raises(AgentTimeoutError):
        await service.process_query(QueryRequest(query="hello", session_id="slow"))
    with pytest.raises(SessionNotFoundError):
        await service.get_session_info("slow")
    assert service.active_runs == 0


async def test_provider_failure_is_an_upstream_error_and_rolls_back_the_turn() -> None:
    """A provider that fails mid-run gives UpstreamError; the session keeps only whole turns."""
    settings = make_settings()
    service = AgentService(settings)
    await service.process_query(QueryRequest(query="hello", session_id="s1"))
    failing = AgentService(settings, model=FailingModel(), checkpointer=service.checkpointer)
    with pytest.raises(UpstreamError):
        await failing.process_query(QueryRequest(query="What is 1 + 1?", session_id="s1"))
    info = await service.get_session_info("s1")
    assert [m.role for m in info.messages] == ["user", "assistant"]


async def test_a_turn_cut_just_after_the_writer_answered_is_rolled_back() -> None:
    """A run cancelled between its writer's answer and the end of that step (a client leaving at the last token)
    leaves the answer only as a pending write of the checkpoint. Rolling the turn back removes the question and
    that answer, instead of failing (it did: the answer was not in the checkpoint the update applies to)."""
    service = AgentService(make_settings())
    config = {"configurable": {"thread_id": "cut"}}
    question = HumanMessage(content="hello", id="question-1")
    stream = service.graph.astream({"messages": [question]}, config, stream_mode="updates", durability="exit")
    async for update in stream:
        if "supervisor" in update:
            break
    await stream.aclose()
    state = await service.graph.aget_state(config)
    assert state.next == ("writer",)
    answer = AIMessage(content="Hello! How can I help?", id="answer-1")
    await service.checkpointer.aput_writes(state.config, [("messages", [answer])], state.tasks[0].id)
    assert [m.id for m in (await service.graph.aget_state(config)).values["messages"]] == ["question-1", "answer-1"]

    await service._rollback("cut", question)  # the service's own cleanup, reached only through that race

    assert (await service.graph.aget_state(config)).values.get("messages", []) == []


async def test_stream_ends_with_one_terminal_event_on_failure() -> None:
    """A failing stream ends with exactly one error event carrying the error code."""
    service = AgentService(make_settings(agent_timeout_seconds=0.2, offline_llm_first_token_delay_ms=500))
    chunks = [chunk async for chunk in service.stream_query(QueryRequest(query="hello"))]
    assert [c.type for c in chunks] == ["start", "error"]
    assert chunks[-1].metadata["code"] == "timeout"


async def test_max_iterations_one_gives_a_documented_answer() -> None:
    """max_iterations=1 ends cleanly with an answer that says so, and the turn is saved whole."""
    service = AgentService(make_settings())
    answer = await service.process_query(QueryRequest(query="What is 2 + 2?", max_iterations=1, session_id="m"))
    assert answer.metadata["stop_reason"] == "max_iterations"
    assert "max_iterations" in answer.response
    info = await service.get_session_info("m")
    assert [m.content for m in info.messages] == ["What is 2 + 2?", answer.response]


async def test_clear_session_removes_its_messages() -> None:
    """A deleted session is gone, and reusing its id starts an empty conversation."""
    service = AgentService(make_settings())
    await service.process_query(QueryRequest(query="my name is Bo", session_id="x"))
    await service.clear_session("x")
    with pytest.raises(SessionNotFoundError):
        await service.get_session_info("x")
    again = await service.process_query(QueryRequest(query="what is my name?", session_id="x"))
    assert again.response == "You have not told me your name in this session yet."


async def test_a_stream_left_while_its_finished_turn_is_counted_still_counts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The graph has answered and the stream is reading the conversation to count the turn when the client
    leaves: the turn is whole, so the session's count must still include it."""
    service = AgentService(make_settings(offline_llm_first_token_delay_ms=0, offline_llm_token_delay_ms=0))
    counting, go_on = asyncio.Event(), asyncio.Event()
    get_state = service.graph.aget_state

    async def held_get_state(*args: Any, **kwargs: Any) -> Any:
        counting.set()  # the only state read of a stream is the count, after the graph's end
        await go_on.wait()
        return await get_state(*args, **kwargs)

    async def read_to_the_end() -> None:
        async for _ in service.stream_query(QueryRequest(query="hello", session_id="counted")):
            pass

    monkeypatch.setattr(service.graph, "aget_state", held_get_state)
    stream = asyncio.create_task(read_to_the_end())
    await asyncio.wait_for(counting.wait(), 10)
    stream.cancel()  # the client leaves while the count is being read
    await asyncio.sleep(0.05)
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await stream
    monkeypatch.undo()
    async with service.sessions.lock("counted"):
        info = await service.get_session_info("counted")
    assert [m.role for m in info.messages] == ["user", "assistant"]
    assert info.message_count == 2


async def test_a_stream_left_mid_answer_holds_its_session_until_rolled_back() -> None:
    """A client leaving mid-answer, as Starlette handles it: the stream's task group is cancelled, and the
    cancellation is delivered again on every turn of the event loop until the task ends. The session stays locked
    until the half turn has been rolled back, so the next turn (or a reader holding the lock) finds whole turns."""
    service = AgentService(make_settings(offline_llm_first_token_delay_ms=0, offline_llm_token_delay_ms=20))
    await service.process_query(QueryRequest(query="hello", session_id="left"))

    async def leave_at_first_token(scope: anyio.CancelScope) -> None:
        async for chunk in service.stream_query(QueryRequest(query="explain caching", session_id="left")):
            if chunk.type == "token":
                scope.cancel()

    for _ in range(5):
        async with anyio.create_task_group() as group:
            group.start_soon(leave_at_first_token, group.cancel_scope)
        async with service.sessions.lock("left"):
            messages = (await service.graph.aget_state({"configurable": {"thread_id": "left"}})).values["messages"]
        assert [type(m).__name__ for m in messages] == ["HumanMessage", "AIMessage"]
