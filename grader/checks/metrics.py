"""Prometheus metrics (advanced lab): the exposition, names and types, route-template labels, counters."""

from __future__ import annotations

from .. import hints
from ..context import Context
from ..core import ADVANCED, check
from ..expect import nonce, status, that
from ..prometheus import Exposition, parse

METRICS_PATH = "/api/v1/metrics"
CONTRACT = {
    "http_requests_total": "counter",
    "http_request_duration_seconds": "histogram",
    "active_sessions": "gauge",
    "agent_executions_total": "counter",
    "agent_execution_duration_seconds": "histogram",
    "cache_hits_total": "counter",
    "cache_misses_total": "counter",
}
SESSION_TEMPLATE = "/api/v1/session/{session_id}"


async def scrape(ctx: Context) -> Exposition:
    """One scrape of the metrics endpoint, without a token."""
    response = await ctx.anon.get(METRICS_PATH)
    status(response, 200)
    return parse(response.text)


def _exposed(exposition: Exposition, name: str, kind: str) -> bool:
    sample_names = {sample.name for sample in exposition.samples}
    wanted = {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    return wanted <= sample_names and exposition.type_of(name) == kind


@check(2, labs=ADVANCED, public=True, hint=hints.METRICS)
async def exposition(ctx: Context) -> None:
    """GET /api/v1/metrics answers the Prometheus text format, without a token."""
    response = await ctx.anon.get(METRICS_PATH)
    status(response, 200)
    kind = response.headers.get("content-type", "")
    that(kind.startswith(("text/plain", "application/openmetrics-text")), "text/plain (Prometheus)", repr(kind))
    found = parse(response.text)
    that(found.types and found.samples, "# TYPE lines and samples", response.text[:200])


@check(2, labs=ADVANCED, depends_on=("exposition", "api.query_shape"), hint=hints.METRICS)
async def names_types(ctx: Context) -> None:
    """The contract's metrics are exposed with their types (counters, histograms, the active_sessions gauge)."""
    await ctx.api.post("/api/v1/query", json={"query": f"Hello [{nonce()}]"})  # so every labelled metric has a child
    found = await scrape(ctx)
    wrong = [f"{name} ({kind})" for name, kind in CONTRACT.items() if not _exposed(found, name, kind)]
    that(not wrong, "every contract metric with its type", f"missing or of another type: {', '.join(wrong)}")


@check(2, labs=ADVANCED, depends_on=("names_types",), hint=hints.METRICS_LABELS)
async def route_templates(ctx: Context) -> None:
    """The endpoint label is the route template (/api/v1/session/{session_id}), never the raw path."""
    marker = nonce()
    await ctx.api.get(f"/api/v1/session/grader-{marker}")
    await ctx.api.get(f"/grader-no-such-path-{marker}")
    found = await scrape(ctx)
    leaked = sorted(value for value in found.label_values() if marker in value)
    that(not leaked, "no label value holding a raw path", f"labels {leaked[:3]}", cause="one time series per URL")
    templates = {sample.labels.get("endpoint") for sample in found.having("http_requests_total")}
    that(SESSION_TEMPLATE in templates, f'endpoint="{SESSION_TEMPLATE}"', f"endpoints {sorted(map(str, templates))}")


@check(2, labs=ADVANCED, depends_on=("names_types",), hint=hints.AGENT_RUNS, alone=True)
async def counters_move(ctx: Context) -> None:
    """Three GET / move http_requests_total by 3; one fresh query moves the agent's counter and histograms by 1."""
    before = await scrape(ctx)
    for _ in range(3):
        await ctx.anon.get("/")
    await ctx.api.post("/api/v1/query", json={"query": f"Hello [{nonce()}]"})
    after = await scrape(ctx)

    def moved(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    root = {"method": "GET", "endpoint": "/", "status": "200"}
    query = {"method": "POST", "endpoint": "/api/v1/query"}
    deltas = {
        'http_requests_total{method="GET",endpoint="/",status="200"}': (moved("http_requests_total", **root), 3),
        "agent_executions_total": (moved("agent_executions_total"), 1),
        "agent_execution_duration_seconds_count": (moved("agent_execution_duration_seconds_count"), 1),
        'http_request_duration_seconds_count{endpoint="/api/v1/query"}': (
            moved("http_request_duration_seconds_count", **query),
            1,
        ),
    }
    wrong = {name: got for name, (got, wanted) in deltas.items() if got != wanted}
    that(not wrong, "+3, +1, +1 and +1 respectively", f"moved by {wrong}")
