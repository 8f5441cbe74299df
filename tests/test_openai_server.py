"""Tests of the local OpenAI-compatible test server, driven through the real openai and LangChain clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.support.openai_server import OpenAITestServer, run_openai_test_server

# A hang or a stuck shutdown must fail the test, not freeze the suite.
pytestmark = pytest.mark.timeout(30)

REPO_ROOT = Path(__file__).resolve().parents[1]


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return "84"


@tool
def search_course_notes(topic: str) -> str:
    """Search the course notes for a topic."""
    return f"notes on {topic}"


@tool
def current_time() -> str:
    """Return the current time."""
    return "12:00"


ROUTE_SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "route",
        "description": "Choose the next worker.",
        "parameters": {
            "type": "object",
            "properties": {"next": {"type": "string", "enum": ["researcher", "writer"]}},
            "required": ["next"],
        },
    },
}


@pytest.fixture(scope="module")
def shared_server() -> Iterator[OpenAITestServer]:
    # One server for the module keeps the suite fast; `server` resets it per test.
    with run_openai_test_server() as running:
        yield running


@pytest.fixture
def server(shared_server: OpenAITestServer) -> OpenAITestServer:
    shared_server.reset()
    return shared_server


def chat(server: OpenAITestServer, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=server.base_url,
        api_key="test-key",
        model="test-model",
        max_retries=0,
        stream_usage=True,
        **kwargs,
    )


def sdk(server: OpenAITestServer, timeout: float = 5.0) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0, timeout=timeout)


def aggregate(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


# langchain_openai caches one async HTTP client per (base_url, timeout) whose pooled connections belong to
# the first event loop; each `asyncio.run` below therefore opens and closes a client of its own.
async def ainvoke_calculator(server: OpenAITestServer, prompt: str) -> BaseMessage:
    async with openai.DefaultAsyncHttpxClient() as client:
        return await chat(server, http_async_client=client).bind_tools([calculator]).ainvoke(prompt)


async def astream_calculator(server: OpenAITestServer, prompt: str) -> list[AIMessageChunk]:
    async with openai.DefaultAsyncHttpxClient() as client:
        model = chat(server, http_async_client=client).bind_tools([calculator])
        return [chunk async for chunk in model.astream(prompt)]


def test_non_streaming_text_answer_reports_usage_and_echoes_model(server: OpenAITestServer) -> None:
    """A plain call returns the writer's echo, word-count usage, the requested model and the API key."""
    message = chat(server).invoke("hello there")

    assert isinstance(message, AIMessage)
    assert message.content == "You said: hello there"
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == 2
    assert message.usage_metadata["output_tokens"] == 4
    assert message.usage_metadata["total_tokens"] == 6
    assert message.response_metadata["model_name"] == "test-model"
    assert message.response_metadata["finish_reason"] == "stop"
    assert server.requests[-1]["_authorization"] == "Bearer test-key"
    assert not server.requests[-1].get("stream")


def test_langchain_stream_joins_to_the_non_streamed_answer(server: OpenAITestServer) -> None:
    """Streamed text arrives in several chunks that join to exactly the non-streamed answer, plus usage."""
    model = chat(server)
    prompt = "tell me  something   with odd spacing"
    expected = model.invoke(prompt).content

    chunks = list(model.stream(prompt))

    text_chunks = [c.content for c in chunks if c.content]
    assert len(text_chunks) > 2
    assert "".join(str(c) for c in text_chunks) == expected
    total = aggregate(chunks)
    assert total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] > 0
    assert server.requests[-1]["stream"] is True
    assert server.requests[-1]["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("include_usage", [True, False])
def test_sdk_stream_sends_usage_chunk_only_when_requested(server: OpenAITestServer, include_usage: bool) -> None:
    """The final `choices: []` usage chunk is sent if and only if `stream_options.include_usage` is set."""
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = sdk(server).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": "count these words"}], stream=True, **extra
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        assert usage_chunks == [chunks[-1]]
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.prompt_tokens == 3
        assert chunks[-1].usage.completion_tokens == 5
        assert server.requests[-1]["stream_options"] == {"include_usage": True}
    else:
        assert usage_chunks == []
        assert all(c.choices for c in chunks)
        assert "stream_options" not in server.requests[-1]


def test_raw_stream_is_sse_ending_with_done(server: OpenAITestServer) -> None:
    """On the wire the stream is `text/event-stream` made of `data: <json>` events and a final `[DONE]`."""
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    response = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=5)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[6:])["object"] == "chat.completion.chunk" for e in events[:-1])


def test_models_endpoint_lists_the_test_model(server: OpenAITestServer) -> None:
    """`GET /v1/models` lists the single test model."""
    assert [m.id for m in sdk(server).models.list()] == ["test-model"]


@pytest.mark.parametrize("use_async", [False, True])
def test_bound_calculator_tool_is_called_on_invoke(server: OpenAITestServer, use_async: bool) -> None:
    """With tools bound, an arithmetic question yields a `calculator` tool call holding the expression."""
    prompt = "What is 12 * 7?"
    if use_async:
        message = asyncio.run(ainvoke_calculator(server, prompt))
    else:
        message = chat(server).bind_tools([calculator]).invoke(prompt)

    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("calculator", {"expression": "12 * 7"})]
    assert message.tool_calls[0]["id"]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert [t["function"]["name"] for t in server.requests[-1]["tools"]] == ["calculator"]


@pytest.mark.parametrize("use_async", [False, True])
def test_bound_calculator_tool_call_streams_in_fragments(server: OpenAITestServer, use_async: bool) -> None:
    """A streamed tool call arrives as a head chunk plus split arguments that aggregate to one valid call."""
    prompt = "What is 12 * 7?"
    if use_async:
        chunks = asyncio.run(astream_calculator(server, prompt))
    else:
        chunks = list(chat(server).bind_tools([calculator]).stream(prompt))

    assert sum(1 for c in chunks if c.tool_call_chunks) >= 3
    total = aggregate(chunks)
    assert [(c["name"], c["args"]) for c in total.tool_calls] == [("calculator", {"expression": "12 * 7"})]
    assert total.tool_calls[0]["id"]
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize(
    ("question", "target"),
    [
        ("What is 12 * 7?", "researcher"),
        ("Compute (3 + 4) / 2 please", "researcher"),
        ("How does CACHING work?", "researcher"),
        ("Explain rate limiting", "researcher"),
        ("What time is it?", "researcher"),
        ("Write a haiku about spring", "writer"),
    ],
)
def test_forced_route_tool_choice_picks_the_next_worker(server: OpenAITestServer, question: str, target: str) -> None:
    """Forcing `route` sends research questions to the researcher and everything else to the writer."""
    model = chat(server).bind_tools([ROUTE_SCHEMA], tool_choice="route")
    message = model.invoke([SystemMessage("You are the supervisor."), HumanMessage(question)])

    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("route", {"next": target})]
    assert server.requests[-1]["tool_choice"] == {"type": "function", "function": {"name": "route"}}


def test_other_forced_function_is_called_with_empty_arguments(server: OpenAITestServer) -> None:
    """Forcing any other function yields a call to it with `{}` arguments."""
    message = chat(server).bind_tools([current_time], tool_choice="current_time").invoke("What is 12 * 7?")

    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("current_time", {})]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Compute (3 + 4) / 2 and talk about caching", ("calculator", {"expression": "(3 + 4) / 2"})),
        ("Explain Rate Limiting for APIs", ("search_course_notes", {"topic": "rate limiting"})),
        ("How do JWT tokens expire?", ("search_course_notes", {"topic": "jwt"})),
        ("What time is it?", ("current_time", {})),
    ],
)
def test_researcher_picks_a_tool_from_the_question(
    server: OpenAITestServer, question: str, expected: tuple[str, dict[str, str]]
) -> None:
    """The researcher prefers calculator, then course notes, then the clock, depending on the question."""
    model = chat(server).bind_tools([calculator, search_course_notes, current_time])
    message = model.invoke(question)

    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [expected]


def test_researcher_without_a_matching_tool_needs_no_research(server: OpenAITestServer) -> None:
    """With tools offered but nothing to look up, the researcher answers in text."""
    message = chat(server).bind_tools([calculator, search_course_notes]).invoke("Tell me a joke")

    assert message.content == "No research needed."
    assert message.tool_calls == []


def test_researcher_summarises_tool_results_after_the_last_question(server: OpenAITestServer) -> None:
    """Tool results after the last user message are joined into `Research notes: ...`."""
    calls = [
        {"name": "calculator", "args": {"expression": "12 * 7"}, "id": "call_a"},
        {"name": "search_course_notes", "args": {"topic": "caching"}, "id": "call_b"},
    ]
    history: list[BaseMessage] = [
        HumanMessage("What is 2 + 2?"),
        AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "2 + 2"}, "id": "call_old"}]),
        ToolMessage("4", tool_call_id="call_old"),
        AIMessage("Research notes: 4"),
        HumanMessage("What is 12 * 7, and how does caching work?"),
        AIMessage("", tool_calls=calls),
        ToolMessage("84", tool_call_id="call_a"),
        ToolMessage("Cache with TTLs", tool_call_id="call_b"),
    ]
    model = chat(server).bind_tools([calculator, search_course_notes])

    assert model.invoke(history).content == "Research notes: 84; Cache with TTLs"
    # Results from an earlier turn do not count: the new question triggers a fresh tool call.
    message = model.invoke([*history[:4], HumanMessage("And 5 * 5?")])
    assert isinstance(message, AIMessage)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("calculator", {"expression": "5 * 5"})]


def test_writer_builds_on_the_last_research_notes(server: OpenAITestServer) -> None:
    """Without tools, the writer answers from the last `Research notes:` in the system messages."""
    messages: list[BaseMessage] = [
        SystemMessage("You are the writer.\nResearch notes: stale"),
        SystemMessage("Draft the answer.\nResearch notes:   84;\n  Cache   with TTLs  "),
        HumanMessage("What is 12 * 7?"),
    ]

    assert chat(server).invoke(messages).content == "Based on the research: 84; Cache with TTLs"


def test_writer_echoes_the_last_user_message_given_as_parts(server: OpenAITestServer) -> None:
    """Without notes, the writer echoes the last user message, also when its content is a list of parts."""
    parts: list[str | dict[Any, Any]] = [{"type": "text", "text": "hello"}, {"type": "text", "text": "world"}]
    messages: list[BaseMessage] = [HumanMessage("ignored"), AIMessage("ok"), HumanMessage(parts)]

    assert chat(server).invoke(messages).content == "You said: hello world"
    assert isinstance(server.requests[-1]["messages"][-1]["content"], list)


@pytest.mark.parametrize("stream", [False, True])
def test_error_mode_raises_internal_server_error_until_switched_back(server: OpenAITestServer, stream: bool) -> None:
    """In `error` mode the client gets HTTP 500 with an OpenAI error body; mode `ok` restores answers."""
    server.mode = "error"
    model = chat(server)
    with pytest.raises(openai.InternalServerError) as caught:
        list(model.stream("hi")) if stream else model.invoke("hi")

    assert caught.value.status_code == 500
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"
    server.mode = "ok"
    assert model.invoke("hi").content == "You said: hi"


def test_unauthorized_mode_raises_authentication_error(server: OpenAITestServer) -> None:
    """In `unauthorized` mode the client gets HTTP 401 with code `invalid_api_key`."""
    server.mode = "unauthorized"
    with pytest.raises(openai.AuthenticationError) as caught:
        chat(server).invoke("hi")

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert len(server.requests) == 1


@pytest.mark.parametrize("client", ["sdk", "langchain"])
def test_hang_mode_is_ended_by_the_client_timeout(server: OpenAITestServer, client: str) -> None:
    """In `hang` mode nothing is answered, so the client's 0.5 s timeout fires."""
    server.mode = "hang"
    if client == "sdk":
        messages: list[Any] = [{"role": "user", "content": "hi"}]
        send = partial(sdk(server, timeout=0.5).chat.completions.create, model="test-model", messages=messages)
    else:
        send = partial(chat(server, timeout=0.5).invoke, "hi")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        send()

    assert 0.4 <= time.monotonic() - started < 5


@pytest.mark.parametrize("stream", [False, True])
def test_garbage_mode_fails_fast_instead_of_answering(server: OpenAITestServer, stream: bool) -> None:
    """In `garbage` mode the body is not JSON, so the client fails to parse it promptly, not answering."""
    server.mode = "garbage"
    model = chat(server, timeout=5)
    started = time.monotonic()
    # The SDK currently surfaces json.JSONDecodeError (a ValueError); a wrapped SDK error is fine too.
    with pytest.raises((ValueError, openai.APIResponseValidationError)):
        list(model.stream("hi")) if stream else model.invoke("hi")

    assert time.monotonic() - started < 3


def test_first_token_delay_holds_back_the_first_streamed_content() -> None:
    """With `first_token_delay_ms=200` the first content chunk arrives at least 0.18 s after the request."""
    with run_openai_test_server(first_token_delay_ms=200) as delayed:
        started = time.monotonic()
        stream = sdk(delayed).chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        first_content_at = next(time.monotonic() for c in stream if c.choices and c.choices[0].delta.content)

    assert 0.18 <= first_content_at - started < 5


def test_token_delay_applies_to_non_streamed_answers() -> None:
    """A non-streamed answer waits the first-token delay plus the per-piece delay for every piece."""
    with run_openai_test_server(first_token_delay_ms=100, token_delay_ms=50) as delayed:
        started = time.monotonic()
        # "You said: a b" is four word pieces: 0.1 s + 4 x 0.05 s.
        assert chat(delayed).invoke("a b").content == "You said: a b"
        elapsed = time.monotonic() - started

    assert 0.28 <= elapsed < 5


def test_server_stops_cleanly_even_after_an_abandoned_hang() -> None:
    """Leaving the context manager closes the port promptly, even with a timed-out request in flight."""
    with run_openai_test_server() as running:
        port = running.port
        running.mode = "hang"
        with pytest.raises(openai.APITimeoutError):
            chat(running, timeout=0.3).invoke("hi")
        exiting = time.monotonic()

    # Under the 2 s graceful-shutdown cap: the abandoned request ended when its client went away.
    assert time.monotonic() - exiting < 1.5
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_module_runs_as_a_script_and_prints_its_base_url() -> None:
    """`python -m tests.support.openai_server --port N` serves on N and prints the base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tests.support.openai_server", "--port", str(port)]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert f"http://127.0.0.1:{port}/v1" in line
            models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
            assert [m["id"] for m in models["data"]] == ["test-model"]
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=10) == 0
