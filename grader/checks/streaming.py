"""Server-Sent Events: the content type, the order of events, the answer they carry, and real streaming."""

from __future__ import annotations

from .. import hints
from ..context import Context
from ..core import Failure, check
from ..expect import json_object, nonce, that
from ..profiles import TOKEN_DELAY_MS
from ..sse import TERMINAL, Stream, read_stream

STREAM_PATH = "/api/v1/query/stream"
EVENT_TYPES = {"start", "token", "step", "done", "error"}


async def _greeting(ctx: Context) -> Stream:
    """One streamed greeting (a ~28-token answer), observed once and judged by several checks."""

    async def stream() -> Stream:
        return await read_stream(ctx.api, STREAM_PATH, {"query": f"Hello [{nonce()}]"})

    return await ctx.memo("greeting-stream", stream)


def order_problem(stream: Stream) -> str:
    """What is wrong with the events' order and shape, or '' when nothing is."""
    names = stream.names
    terminal = [name for name in names if name in TERMINAL]
    session_ids = {str((event.data or {}).get("session_id")) for event in stream.events}
    if not names:
        return stream.summary()
    if bad := [e.name for e in stream.events if e.data is None or e.data.get("type") != e.name]:
        return f"events whose data is not a StreamChunk JSON with a matching type: {bad[:5]}"
    if unknown := set(names) - EVENT_TYPES:
        return f"unknown event types {sorted(unknown)}"
    if names[0] != "start" or len(terminal) != 1 or names[-1] not in TERMINAL:
        return stream.summary()
    if len(session_ids) != 1:
        return f"events with different session_ids: {sorted(session_ids)}"
    return ""


@check(2, depends_on=("api.query_shape",), hint=hints.STREAM)
async def content_type(ctx: Context) -> None:
    """POST /api/v1/query/stream answers 200 with Content-Type text/event-stream."""
    stream = await _greeting(ctx)
    that(stream.status_code == 200, "HTTP 200", f"HTTP {stream.status_code}: {stream.body[:200]!r}")
    that(stream.content_type.startswith("text/event-stream"), "text/event-stream", repr(stream.content_type))


@check(2, depends_on=("content_type",), hint=hints.STREAM)
async def event_order(ctx: Context) -> None:
    """The stream is start, then token and step events, then exactly one done, which comes last."""
    stream = await _greeting(ctx)
    expected = "start, token and step events, then one done (each data a StreamChunk with that type)"
    that(not order_problem(stream), expected, order_problem(stream))
    that(stream.names[-1] == "done", "a done event at the end", stream.summary())
    that(len(stream.named("token")) >= 2, "the answer in several token events", stream.summary())


@check(2, depends_on=("event_order",), hint=hints.STREAM)
async def tokens_join(ctx: Context) -> None:
    """Joining the token events' contents gives the done event's content."""
    stream = await _greeting(ctx)
    joined, done = "".join(e.content for e in stream.named("token")), stream.named("done")[0].content
    that(joined == done and done, "the tokens joined equal to the done content", f"tokens {joined!r}, done {done!r}")


@check(1, depends_on=("event_order",), hint=hints.STREAM)
async def done_metadata(ctx: Context) -> None:
    """The done event's metadata has execution_time and tokens_used."""
    metadata = (await _greeting(ctx)).named("done")[0].data or {}
    metadata = metadata.get("metadata") or {}
    present = isinstance(metadata.get("execution_time"), (int, float)) and isinstance(metadata.get("tokens_used"), int)
    that(present, "metadata with execution_time and tokens_used", f"metadata {metadata}")


@check(3, depends_on=("event_order",), hint=hints.REAL_STREAM, retry=True)
async def really_streams(ctx: Context) -> None:
    """Events are sent as they happen: the first token arrives well before the done event."""
    stream = await _greeting(ctx)
    tokens, done = stream.named("token"), stream.named("done")[0]
    # The offline model waits TOKEN_DELAY_MS between tokens, so a real stream spreads them at least that far.
    needed = max(0.1, 0.5 * (len(tokens) - 1) * TOKEN_DELAY_MS / 1000)
    gap = done.at - tokens[0].at
    if gap < needed:
        raise Failure(
            f"the first token at least {needed:.2f} s before done ({len(tokens)} tokens, {TOKEN_DELAY_MS} ms apart)",
            f"the first token {gap:.3f} s before done: the events arrived together",
            cause="the answer is collected before it is sent (a buffered response, or a list of events)",
        )


@check(1, depends_on=("event_order",), hint=hints.STREAM_FLAG)
async def query_stream_flag(ctx: Context) -> None:
    """POST /api/v1/query with "stream": true answers with the same SSE stream."""
    stream = await read_stream(ctx.api, "/api/v1/query", {"query": f"Hello [{nonce()}]", "stream": True})
    that(stream.content_type.startswith("text/event-stream"), "text/event-stream", repr(stream.content_type))
    that(not order_problem(stream) and stream.names[-1] == "done", "start ... done", order_problem(stream))
    joined = "".join(e.content for e in stream.named("token"))
    that(joined == stream.named("done")[0].content, "tokens that join to the done content", repr(joined[:100]))


@check(1, depends_on=("event_order", "sessions.get_session"), hint=hints.STREAM)
async def stream_saved(ctx: Context) -> None:
    """A streamed answer is saved in its session, like a JSON one."""
    session_id = f"grader-{nonce()}"
    stream = await read_stream(ctx.api, STREAM_PATH, {"query": f"Hello [{nonce()}]", "session_id": session_id})
    that(stream.names[-1:] == ["done"], "a stream that ends with done", stream.summary())
    session = json_object(await ctx.api.get(f"/api/v1/session/{session_id}"))
    messages = session.get("messages") or [{}]
    last = messages[-1].get("content")
    that(
        len(messages) == 2 and last == stream.named("done")[0].content,
        "the session holding the question and the streamed answer",
        f"{len(messages)} message(s), the last {str(last)[:80]!r}",
    )
