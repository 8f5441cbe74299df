"""Errors: every 4xx and 5xx is an ErrorResponse with the right code; validation; timeouts; provider failures."""

from __future__ import annotations

from typing import Any

from .. import hints
from ..context import Context
from ..core import check
from ..expect import error_response, json_object, nonce, that
from ..sse import TERMINAL, read_stream
from .sessions import ask

QUERY = "/api/v1/query"


@check(1, hint=hints.ERROR_HANDLERS)
async def not_found_route(ctx: Context) -> None:
    """An unknown path answers 404 with an ErrorResponse (not_found)."""
    error_response(await ctx.api.get(f"/api/v1/grader-no-such-route-{nonce()}"), 404, "not_found")


@check(2, hint=hints.ERROR_HANDLERS)
async def unknown_session(ctx: Context) -> None:
    """GET and DELETE of an unknown session answer 404 not_found."""
    path = f"/api/v1/session/grader-unknown-{nonce()}"
    error_response(await ctx.api.get(path), 404, "not_found")
    error_response(await ctx.api.delete(path), 404, "not_found")


@check(1, hint=hints.ERROR_HANDLERS)
async def unknown_task(ctx: Context) -> None:
    """GET of an unknown background task answers 404 not_found."""
    error_response(await ctx.api.get(f"/api/v1/tasks/grader{nonce()}"), 404, "not_found")


@check(1, hint=hints.ERROR_HANDLERS)
async def method_not_allowed(ctx: Context) -> None:
    """A wrong method on a known path answers 405 with an ErrorResponse."""
    error_response(await ctx.api.put(QUERY, json={"query": "hi"}), 405, None)


async def _rejected(ctx: Context, cases: list[tuple[str, dict[str, Any]]]) -> None:
    for label, request in cases:
        response = await ctx.api.post(QUERY, **request)
        error_response(response, 422, "validation_error", cause=f"the request had {label}")


@check(2, hint=hints.QUERY_BOUNDS)
async def validation_empty(ctx: Context) -> None:
    """An empty query, or one that is blank or control characters only, answers 422 validation_error."""
    cases = [("an empty query", ""), ("a blank query", " \n\t "), ("only control characters", "\x00\x07\x1b")]
    requests: list[tuple[str, dict[str, Any]]] = [(label, {"json": {"query": query}}) for label, query in cases]
    await _rejected(ctx, requests)


@check(1, hint=hints.QUERY_BOUNDS)
async def validation_length(ctx: Context) -> None:
    """A query over 4000 characters answers 422; 4000 characters (after stripping) are accepted."""
    await _rejected(ctx, [("4001 characters", {"json": {"query": "x" * 4001}})])
    response = await ctx.api.post(QUERY, json={"query": f"  {'x' * 4000}  "})
    json_object(response, 200, cause="4000 characters after stripping the surrounding spaces are allowed")


@check(2, hint=hints.VALIDATION)
async def validation_fields(ctx: Context) -> None:
    """A bad session_id, max_iterations outside 1-20, no query, a non-string query or broken JSON answer 422."""
    cases: list[tuple[str, dict[str, Any]]] = [
        ("session_id 'bad id!'", {"json": {"query": "hi", "session_id": "bad id!"}}),
        ("a 65-character session_id", {"json": {"query": "hi", "session_id": "a" * 65}}),
        ("max_iterations 0", {"json": {"query": "hi", "max_iterations": 0}}),
        ("max_iterations 21", {"json": {"query": "hi", "max_iterations": 21}}),
        ("no query", {"json": {"session_id": "abc"}}),
        ("a number as the query", {"json": {"query": 5}}),
        ("broken JSON", {"content": b'{"query": ', "headers": {"Content-Type": "application/json"}}),
    ]
    await _rejected(ctx, cases)


@check(1, depends_on=("api.query_shape",), hint=hints.SANITISE)
async def sanitised(ctx: Context) -> None:
    """Control characters are removed and whitespace stripped before the query is used and saved."""
    question = f"What is 12 * 7? [{nonce()}]"
    body = await ask(ctx, f"\t {question}\x07\x00 \n")
    session = json_object(await ctx.api.get(f"/api/v1/session/{body['session_id']}"))
    saved = (session.get("messages") or [{}])[0].get("content")
    that(saved == question, f"the question saved as {question!r}", f"saved as {saved!r}")


@check(2, profile="limits", depends_on=("api.query_shape",), hint=hints.TIMEOUT, retry=True)
async def timeout(ctx: Context) -> None:
    """A run longer than AGENT_TIMEOUT_SECONDS answers 504 timeout (profile: 1 s timeout, 1.5 s model)."""
    response = await ctx.api.post(QUERY, json={"query": f"Hello [{nonce()}]"})
    error_response(response, 504, "timeout")


async def _stream_error(ctx: Context, code: str) -> None:
    stream = await read_stream(ctx.api, f"{QUERY}/stream", {"query": f"Hello [{nonce()}]"})
    terminal = [event for event in stream.events if event.name in TERMINAL]
    that(
        len(terminal) == 1 and stream.events[-1].name == "error",
        "exactly one terminal event, an error, at the end",
        stream.summary(),
    )
    found = ((terminal[0].data or {}).get("metadata") or {}).get("code")
    that(found == code, f"the error event's metadata.code {code!r}", repr(found))


@check(2, profile="limits", depends_on=("streaming.event_order",), hint=hints.TIMEOUT, retry=True)
async def stream_timeout(ctx: Context) -> None:
    """A streamed run that times out ends with one error event whose metadata.code is timeout."""
    await _stream_error(ctx, "timeout")


@check(2, profile="upstream", depends_on=("api.query_shape",), hint=hints.UPSTREAM_ANSWER)
async def upstream(ctx: Context) -> None:
    """A failing LLM provider answers 502 upstream_error, with no traceback in the body."""
    response = await ctx.api.post(QUERY, json={"query": f"Hello [{nonce()}]"})
    error_response(response, 502, "upstream_error")
    that("Traceback" not in response.text, "no traceback in the body", response.text[:200])


@check(1, profile="upstream", depends_on=("streaming.event_order",), hint=hints.UPSTREAM)
async def stream_upstream(ctx: Context) -> None:
    """A streamed run whose provider fails ends with one error event whose metadata.code is upstream_error."""
    await _stream_error(ctx, "upstream_error")
