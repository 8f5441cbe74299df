"""The advanced agent service: whole turns under failure, turns that take turns, the step bound, ownership."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatResult

from app.agent import OfflineChatModel
from app.agent_runs import thread
from app.agent_service import AgentService
from app.auth import User
from app.exceptions import SessionNotFoundError, UpstreamError
from app.models import QueryRequest

DEMO = User("demo", "Demo User", disabled=False)
ALICE = User("alice", "Alice Example", disabled=False)


class FailingWriter(OfflineChatModel):
    """Fails like an unreachable provider on the writer's call (the one without tools), streamed or not."""

    async def _astream(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if not kwargs.get("tools"):
            raise httpx.ConnectError("connection refused")
        async for chunk in super()._astream(messages, *args, **kwargs):
            yield chunk

    async def _agenerate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        if not kwargs.get("tools"):
            raise httpx.ConnectError("connection refused")
        return await super()._agenerate(messages, *args, **kwargs)


def _service(client: TestClient) -> AgentService:
    service: AgentService = client.app.state.agent_service  # type: ignore[attr-defined]
    return service


def _run(client: TestClient, coroutine: Any) -> Any:
    return client.portal.call(lambda: coroutine)  # type: ignore[union-attr]


def test_upstream_failure_keeps_the_session_whole(client: TestClient) -> None:
    """A provider failure mid-turn raises UpstreamError, counts an error run, and leaves only whole turns."""
    service = _service(client)
    _run(client, service.process_query(QueryRequest(query="hello", session_id="s1"), DEMO))
    failing = AgentService(
        service.settings,
        checkpointer=service.conversations.checkpointer,
        sessions=service.conversations.sessions,
        cache=service.cache,
        metrics=service.metrics,
        model=FailingWriter(),
    )
    with pytest.raises(UpstreamError):
        _run(client, failing.process_query(QueryRequest(query="What is 1 + 1?", session_id="s1"), DEMO))
    info = _run(client, service.get_session_info("s1", DEMO))
    assert [m.role for m in info.messages] == ["user", "assistant"]
    assert info.message_count == 2
    text = client.get("/api/v1/metrics").text
    assert 'agent_executions_total{status="error"} 1.0' in text


async def _cut_just_after_the_writer_answered(service: AgentService, session_id: str, question: HumanMessage) -> None:
    """Leave the session as a run cancelled between its writer's answer and the end of that step leaves it (a
    client leaving at the last token): the checkpoint after the supervisor's step, holding the question, and the
    writer's answer only as a pending write of that checkpoint, which is what LangGraph saves on such an exit."""
    graph, checkpointer = service.conversations.graph, service.conversations.checkpointer
    stream = graph.astream({"messages": [question]}, thread(session_id), stream_mode="updates", durability="exit")
    async for update in stream:
        if "supervisor" in update:
            break
    await stream.aclose()
    state = await graph.aget_state(thread(session_id))
    assert state.next == ("writer",)
    answer = AIMessage(content="Hello! How can I help?", id="answer-1")
    await checkpointer.aput_writes(state.config, [("messages", [answer])], state.tasks[0].id)
    shown = await service.conversations.messages(session_id)
    assert [m.id for m in shown] == [question.id, "answer-1"], "the state shows the pending answer"


def test_a_turn_cut_just_after_the_writer_answered_is_rolled_back(client: TestClient) -> None:
    """Rolling back such a turn removes the question and the pending answer, instead of failing (it did: the
    answer was not in the checkpoint the update applies to, and the stream logged 'agent stream failed')."""
    service = _service(client)
    question = HumanMessage(content="hello", id="question-1")
    _run(client, _cut_just_after_the_writer_answered(service, "cut", question))
    _run(client, service.conversations.rollback("cut", question))
    assert _run(client, service.conversations.messages("cut")) == []
    answer, _ = _run(client, service.process_query(QueryRequest(query="hello again", session_id="cut"), DEMO))
    info = _run(client, service.get_session_info("cut", DEMO))
    assert [(m.role, m.content) for m in info.messages] == [("user", "hello again"), ("assistant", answer.response)]


async def _leave_while_the_turn_is_recorded(service: AgentService, session_id: str) -> None:
    """Stream a turn, and leave once it is whole and its session's row is being written; then let the write go on."""
    sessions = service.conversations.sessions
    writing, go_on = asyncio.Event(), asyncio.Event()
    record_turn = sessions.record_turn

    async def held_record_turn(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await go_on.wait()
        return await record_turn(*args, **kwargs)

    sessions.record_turn = held_record_turn  # type: ignore[method-assign]
    try:

        async def read_to_the_end() -> None:
            async for _ in service.stream_query(QueryRequest(query="hello", session_id=session_id), DEMO):
                pass

        reader = asyncio.create_task(read_to_the_end())
        await asyncio.wait_for(writing.wait(), 10)
        reader.cancel()  # the client leaves: the stream closes and the run's task is cancelled
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await asyncio.sleep(0.05)
        go_on.set()
        await asyncio.wait_for(service.unwound(), 10)
    finally:
        sessions.record_turn = record_turn  # type: ignore[method-assign]


def test_a_stream_left_while_its_turn_is_recorded_still_counts_it(client: TestClient) -> None:
    """The graph has answered, and the stream is writing the session's row when the client leaves: the turn is
    whole in the checkpoint, so the row must be written and count it."""
    service = _service(client)
    _run(client, _leave_while_the_turn_is_recorded(service, "recorded"))
    info = _run(client, service.get_session_info("recorded", DEMO))
    assert [m.role for m in info.messages] == ["user", "assistant"]
    assert info.message_count == 2


def test_concurrent_turns_on_one_session_lose_no_message(client: TestClient) -> None:
    """Eight concurrent questions to one session: sixteen messages, each question once."""
    service = _service(client)
    questions = [f"What is {n} * 3?" for n in range(8)]

    async def ask_all() -> None:
        await asyncio.gather(
            *(service.process_query(QueryRequest(query=q, session_id="shared"), DEMO) for q in questions)
        )

    client.portal.call(ask_all)  # type: ignore[union-attr]
    info = _run(client, service.get_session_info("shared", DEMO))
    assert info.message_count == 16
    assert sorted(m.content for m in info.messages if m.role == "user") == sorted(questions)


def test_step_bound_answers_and_is_not_cached_as_a_full_answer(client: TestClient) -> None:
    """max_iterations=1 ends with the documented answer; the bound is part of the cache key."""
    service = _service(client)
    short, status = _run(client, service.process_query(QueryRequest(query="What is 9 * 9?", max_iterations=1), DEMO))
    full, full_status = _run(client, service.process_query(QueryRequest(query="What is 9 * 9?"), DEMO))
    assert short.metadata["stop_reason"] == "max_iterations"
    assert (status, full_status) == ("MISS", "MISS")
    assert full.response == "9 * 9 = 81."


def test_another_users_session_is_not_found(client: TestClient) -> None:
    """Alice cannot read, delete or continue demo's session."""
    service = _service(client)
    _run(client, service.process_query(QueryRequest(query="hi", session_id="mine"), DEMO))
    for call in (
        service.get_session_info("mine", ALICE),
        service.clear_session("mine", ALICE),
        service.process_query(QueryRequest(query="hi", session_id="mine"), ALICE),
    ):
        with pytest.raises(SessionNotFoundError):
            _run(client, call)
