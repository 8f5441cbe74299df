"""Metrics, JSON log lines, and the pure ASGI middleware: request ids, access log, metrics, rate limit."""

import json
import math
import re
import sys
import time
import uuid
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import Settings
from .errors import ApiError, error_body
from .security import token_subject

REGISTRY = CollectorRegistry()
HTTP_REQUESTS = Counter("http_requests_total", "Requests", ["method", "endpoint", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram("http_request_duration_seconds", "Latency", ["method", "endpoint"], registry=REGISTRY)
ACTIVE_SESSIONS = Gauge("active_sessions", "Sessions", registry=REGISTRY)
AGENT_RUNS = Counter("agent_executions_total", "Agent runs", ["status"], registry=REGISTRY)
AGENT_DURATION = Histogram("agent_execution_duration_seconds", "Agent run time", registry=REGISTRY)
CACHE_HITS = Counter("cache_hits_total", "Cache hits", registry=REGISTRY)
CACHE_MISSES = Counter("cache_misses_total", "Cache misses", registry=REGISTRY)
EXEMPT = {"/", "/health", "/docs", "/openapi.json", "/api/v1/metrics"}
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


def start_tracing(endpoint: str | None) -> TracerProvider | None:
    """Export spans over OTLP/HTTP when tracing is on."""
    if not endpoint:
        return None
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    return provider


def log(event: str, level: str = "info", **fields: Any) -> None:
    record = {"timestamp": datetime.now(UTC).isoformat(), "level": level, "event": event}
    record |= {"request_id": request_id_var.get()} | fields
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        record["trace_id"] = format(span.trace_id, "032x")
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Observe:
    """Request id, one access line and the HTTP metrics for every request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _SANE_ID.match(offered) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with trace.get_tracer("mini").start_as_current_span(f"{scope['method']} {scope['path']}"):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                self.record(scope, status, time.perf_counter() - started)
                request_id_var.reset(token)

    def record(self, scope: Scope, status: int, elapsed: float) -> None:
        """The request's metrics and its access line (inside the request's span, so it has the trace id)."""
        endpoint = getattr(scope.get("route"), "path", "unmatched")
        HTTP_REQUESTS.labels(scope["method"], endpoint, str(status)).inc()
        HTTP_DURATION.labels(scope["method"], endpoint).observe(elapsed)
        client = scope.get("client") or ("-", 0)
        log(
            "request",
            method=scope["method"],
            path=scope["path"],
            status_code=status,
            duration_ms=round(elapsed * 1000, 2),
            client=client[0],
            user=scope["state"].get("user"),
        )


class RateLimit:
    """A sliding window per user (from a valid token) or else per address."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.hits: dict[str, deque[float]] = {}

    def key(self, scope: Scope) -> str:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            try:
                return f"user:{token_subject(token, self.settings.secret_key)}"
            except ApiError:
                pass
        return f"ip:{(scope.get('client') or ('-', 0))[0]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        now, limit, window = time.monotonic(), self.settings.rate_limit, self.settings.rate_window
        hits = self.hits.setdefault(self.key(scope), deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        allowed = len(hits) < limit
        if allowed:
            hits.append(now)
        reset = max(math.ceil(hits[0] + window - now), 1)
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(limit - len(hits)),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            body = error_body(scope["state"]["request_id"], "rate_limited", "Too many requests")
            response = JSONResponse(body, 429, headers=headers | {"Retry-After": str(reset)})
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)
