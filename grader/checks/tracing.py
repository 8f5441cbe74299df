"""Tracing (advanced lab): spans reach the OTLP collector, one per graph node, and log lines name their trace."""

from __future__ import annotations

import asyncio
import re

from .. import hints
from ..context import Context
from ..core import ADVANCED, check
from ..expect import nonce, that
from .logging import lines_of_request

NODES = (b"agent.node.supervisor", b"agent.node.writer")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
WAIT_SECONDS = 5.0


async def _received(ctx: Context, wanted: tuple[bytes, ...] = ()) -> bool:
    """Whether spans (holding each of `wanted`) reached the collector, waiting for the exporter's next batch."""
    for _ in range(int(WAIT_SECONDS / 0.1)):
        bodies = ctx.setup.spans
        if bodies and all(any(part in body for body in bodies) for part in wanted):
            return True
        await asyncio.sleep(0.1)
    return False


async def _query(ctx: Context, request_id: str = "") -> None:
    headers = {"X-Request-ID": request_id} if request_id else {}
    await ctx.api.post("/api/v1/query", json={"query": f"Hello [{nonce()}]"}, headers=headers)


@check(2, labs=ADVANCED, profile="restart", depends_on=("api.query_shape",), hint=hints.TRACING_EXPORT)
async def spans_exported(ctx: Context) -> None:
    """With TRACING_ENABLED, a query's spans reach OTEL_EXPORTER_OTLP_ENDPOINT over OTLP/HTTP."""
    await _query(ctx)
    that(await _received(ctx), f"spans at the collector within {WAIT_SECONDS:g} s", "nothing arrived")


@check(2, labs=ADVANCED, profile="restart", depends_on=("spans_exported",), hint=hints.TRACING_NODES)
async def node_spans(ctx: Context) -> None:
    """A query's trace has a span per graph node (agent.node.supervisor, agent.node.writer, ...)."""
    await _query(ctx)
    found = await _received(ctx, NODES)
    names = sorted({name.decode() for body in ctx.setup.spans for name in re.findall(rb"agent\.node\.\w+", body)})
    that(found, f"spans named {', '.join(n.decode() for n in NODES)}", f"node spans seen: {names or 'none'}")


@check(
    2, labs=ADVANCED, profile="restart", depends_on=("spans_exported", "logging.access_line"), hint=hints.TRACING_LOGS
)
async def trace_ids_in_logs(ctx: Context) -> None:
    """A request's log lines carry trace_id, the id of the trace its spans were exported under."""
    request_id = f"grader-trace-{nonce()}"
    await _query(ctx, request_id)
    ids = {str(line.get("trace_id")) for line in await lines_of_request(ctx, request_id)}
    ids = {trace_id for trace_id in ids if TRACE_ID.match(trace_id)}
    that(ids, "the request's log lines with a 32-hex-digit trace_id", f"trace_id values {ids or 'none'}")
    exported = await _received(ctx, tuple(bytes.fromhex(trace_id) for trace_id in ids))
    that(exported, "that trace among the exported spans", f"trace {sorted(ids)} not exported")
