"""Local OpenAI-compatible chat completions server for exercising real clients in tests."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

JSON = dict[str, Any]
MODEL_ID = "test-model"
MAX_HANG_SECONDS = 120.0

ARITHMETIC = re.compile(r"\(*\s*\d+(?:\.\d+)?\s*\)*(?:\s*(?:\*\*|[-+*/%])\s*\(*\s*\d+(?:\.\d+)?\s*\)*)+")
TOPIC = re.compile(r"\b(caching|cache|rate[\s-]limit(?:ing)?|jwt|sse|streaming|prometheus|metrics)\b", re.I)
TIME_WORD = re.compile(r"\btime\b", re.I)


@dataclass(frozen=True)
class ToolCall:
    """One function call the fake model makes."""

    name: str
    arguments: JSON


@dataclass(frozen=True)
class Reply:
    """What the fake model answers: either text or tool calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


Responder = Callable[[JSON], Reply]


def text_of(content: Any) -> str:
    """Flatten OpenAI message content (a string or a list of parts) to plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part for part in content if isinstance(part, dict) and part.get("type") == "text"]
        return " ".join(str(part.get("text", "")) for part in parts)
    return ""


def needs_research(text: str) -> bool:
    """Whether the supervisor should route this user question to the researcher."""
    return bool(ARITHMETIC.search(text) or TOPIC.search(text) or TIME_WORD.search(text))


def _research_reply(question: str, tool_names: set[str]) -> Reply:
    expression = ARITHMETIC.search(question)
    topic = TOPIC.search(question)
    if expression and "calculator" in tool_names:
        return Reply(tool_calls=(ToolCall("calculator", {"expression": expression.group().strip()}),))
    if topic and "search_course_notes" in tool_names:
        return Reply(tool_calls=(ToolCall("search_course_notes", {"topic": topic.group().lower()}),))
    if TIME_WORD.search(question) and "current_time" in tool_names:
        return Reply(tool_calls=(ToolCall("current_time", {}),))
    return Reply(text="No research needed.")


def default_responder(body: JSON) -> Reply:
    """Deterministic answers shaped for the course's supervisor -> researcher -> writer graph."""
    messages: list[JSON] = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = text_of(messages[last_user].get("content")) if last_user >= 0 else ""
    tools = [t.get("function") or {} for t in body.get("tools") or [] if isinstance(t, dict)]
    tool_names = {str(function.get("name")) for function in tools}

    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        forced = str((choice.get("function") or {}).get("name", ""))
        if forced == "route":
            target = "researcher" if needs_research(question) else "writer"
            return Reply(tool_calls=(ToolCall("route", {"next": target}),))
        return Reply(tool_calls=(ToolCall(forced, {}),))

    if tool_names:
        results = [text_of(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        if results:
            return Reply(text="Research notes: " + "; ".join(results))
        return _research_reply(question, tool_names)

    marker = "Research notes:"
    notes = [text_of(m.get("content")) for m in messages if m.get("role") == "system"]
    notes = [n for n in notes if marker in n]
    if notes:
        return Reply(text="Based on the research: " + " ".join(notes[-1].rsplit(marker, 1)[1].split()))
    return Reply(text="You said: " + question)


@dataclass
class OpenAITestServer:
    """Handle to a running test server; tests flip `mode` and inspect `requests`."""

    host: str
    port: int
    first_token_delay_ms: float = 0
    token_delay_ms: float = 0
    mode: str = "ok"
    responder: Responder = default_responder
    requests: list[JSON] = field(default_factory=list)
    model_requests: list[JSON] = field(default_factory=list)  # GET /v1/models, the health probes

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def reset(self) -> None:
        """Forget recorded requests and return to normal answers."""
        self.requests.clear()
        self.model_requests.clear()
        self.mode = "ok"
        self.responder = default_responder


def _usage(body: JSON, reply: Reply) -> JSON:
    # "Tokens" are whitespace-separated words: crude, but deterministic and always positive.
    prompt = " ".join(text_of(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
    answer = " ".join([reply.text, *(f"{c.name} {json.dumps(c.arguments)}" for c in reply.tool_calls)])
    sent, got = max(1, len(prompt.split())), max(1, len(answer.split()))
    return {"prompt_tokens": sent, "completion_tokens": got, "total_tokens": sent + got}


def _deltas(reply: Reply, call_ids: list[str]) -> list[JSON]:
    """The stream's content-bearing deltas; also the 'pieces' the delays are charged for."""
    if not reply.tool_calls:
        return [{"content": piece} for piece in re.split(r"(?<=\s)(?=\S)", reply.text) if piece]
    deltas: list[JSON] = []
    for index, (call, call_id) in enumerate(zip(reply.tool_calls, call_ids, strict=True)):
        head = {"index": index, "id": call_id, "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
        # Real providers send arguments in fragments; at least two forces clients to concatenate them.
        arguments = json.dumps(call.arguments)
        size = max(1, min(8, len(arguments) // 2))
        for start in range(0, len(arguments), size):
            fragment = {"arguments": arguments[start : start + size]}
            deltas.append({"tool_calls": [{"index": index, "function": fragment}]})
    return deltas


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status)


async def _fault(mode: str, request: Request, stream: bool) -> Response:
    if mode == "error":
        return _error(500, "The test server was told to fail.", "server_error")
    if mode == "unauthorized":
        return _error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
    if mode == "hang":
        # Ending when the client goes away keeps a timed-out request from holding up server shutdown.
        with suppress(TimeoutError):
            async with asyncio.timeout(MAX_HANG_SECONDS):
                while (await request.receive())["type"] != "http.disconnect":
                    pass
        return _error(504, "Hang mode gave up.", "server_error")
    if mode == "garbage":
        # Streams get a broken SSE event; plain replies claim JSON but are not.
        if stream:
            return Response("data: {this is not json\n\n", media_type="text/event-stream")
        return Response("{this is not json", media_type="application/json")
    return _error(500, f"Unknown test server mode {mode!r}.", "server_error")


def _completion(base: JSON, reply: Reply, call_ids: list[str], usage: JSON) -> JSON:
    message: JSON = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c, i in zip(reply.tool_calls, call_ids, strict=True)
        ]
    finish_reason = "tool_calls" if reply.tool_calls else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}


def _chunk(base: JSON, delta: JSON | None, finish: str | None = None, usage: JSON | None = None) -> str:
    chunk: JSON = {**base, "object": "chat.completion.chunk", "choices": []}
    if delta is not None:
        chunk["choices"] = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    if usage is not None:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk)}\n\n"


def build_app(server: OpenAITestServer) -> Starlette:
    """The ASGI app; it reads `server` on every request so tests can change it at run time."""

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.", "invalid_request_error")
        server.requests.append({**body, "_authorization": request.headers.get("authorization")})
        stream = bool(body.get("stream"))
        if server.mode != "ok":
            return await _fault(server.mode, request, stream)
        reply = server.responder(body)
        call_ids = [f"call_{uuid.uuid4().hex[:24]}" for _ in reply.tool_calls]
        deltas = _deltas(reply, call_ids)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.get("model")}
        first_delay, token_delay = server.first_token_delay_ms / 1000, server.token_delay_ms / 1000
        if not stream:
            await asyncio.sleep(first_delay + token_delay * len(deltas))
            return JSONResponse(_completion(base, reply, call_ids, _usage(body, reply)))

        async def events() -> AsyncIterator[str]:
            yield _chunk(base, {"role": "assistant", "content": ""})
            for position, delta in enumerate(deltas):
                await asyncio.sleep(first_delay if position == 0 else token_delay)
                yield _chunk(base, delta)
            await asyncio.sleep(token_delay if deltas else first_delay)
            yield _chunk(base, {}, "tool_calls" if reply.tool_calls else "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _chunk(base, None, usage=_usage(body, reply))
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def list_models(request: Request) -> Response:
        server.model_requests.append({"_authorization": request.headers.get("authorization")})
        if server.mode != "ok":
            return await _fault(server.mode, request, stream=False)
        model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "test"}
        return JSONResponse({"object": "list", "data": [model]})

    chat_route = Route("/v1/chat/completions", chat_completions, methods=["POST"])
    return Starlette(routes=[chat_route, Route("/v1/models", list_models, methods=["GET"])])


def _wait_until_accepting(host: str, port: int, thread: threading.Thread, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        with suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.01)
    raise RuntimeError(f"OpenAI test server did not start on {host}:{port}")


@contextmanager
def run_openai_test_server(
    first_token_delay_ms: float = 0,
    token_delay_ms: float = 0,
    *,
    mode: str = "ok",
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[OpenAITestServer]:
    """Serve the fake API in a background thread for the duration of the `with` block."""
    # Binding here (port 0 = any free port) means the port is known before uvicorn starts.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    state = OpenAITestServer(host, sock.getsockname()[1], first_token_delay_ms, token_delay_ms, mode)
    # The graceful-shutdown cap keeps a stuck request from blocking the `with` exit.
    config = uvicorn.Config(build_app(state), lifespan="off", log_level="error", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait_until_accepting(host, state.port, thread, timeout=10.0)
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--first-token-delay-ms", type=float, default=0)
    parser.add_argument("--token-delay-ms", type=float, default=0)
    parser.add_argument("--mode", default="ok", choices=["ok", "error", "hang", "garbage", "unauthorized"])
    with run_openai_test_server(**vars(parser.parse_args(argv))) as server:
        print(f"OpenAI test server listening at {server.base_url} (Ctrl+C to stop)", flush=True)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
