"""Prometheus metrics with the contract's names, correct under several uvicorn workers (multiprocess mode).

With PROMETHEUS_MULTIPROC_DIR set (as `app.serve` and the Docker image do), every worker writes its values to
files in that folder and a scrape adds them up; without it, the values live in this process.
"""

import os
import re
import time
from collections.abc import Sequence
from typing import Final

from fastapi.routing import iter_route_contexts
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
AGENT_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
UNMATCHED = "unmatched"  # the endpoint label of requests no route matched: keeps the label set bounded
# The *_created series double what a scrape carries and nothing here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode, if it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics, registered in a registry of their own (one per application)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_sessions = Gauge(
            "active_sessions", "Conversations that exist.", registry=r, multiprocess_mode="livemostrecent"
        )
        self.agent_executions = Counter("agent_executions", "Agent runs by outcome.", ["status"], registry=r)
        self.agent_duration = Histogram(
            "agent_execution_duration_seconds", "How long agent runs take.", buckets=AGENT_BUCKETS, registry=r
        )
        self.cache_hits = Counter("cache_hits", "Answers served from the cache.", registry=r)
        self.cache_misses = Counter("cache_misses", "Answers the cache did not have.", registry=r)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def track_request_metrics(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        """Count one request and observe its latency (children cached: labels() takes a lock each call)."""
        key = (method, endpoint, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.http_requests.labels(method, endpoint, str(status)),
                self.http_duration.labels(method, endpoint),
            )
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def track_agent_run(self, status: str, seconds: float) -> None:
        """Count one agent run by outcome (success, error, timeout) and observe its duration."""
        # BEGIN SOLUTION TODO 21: count the run by outcome and observe its duration
        self.agent_executions.labels(status).inc()
        self.agent_duration.observe(seconds)
        # BEGIN STARTER
        # END STARTER
        # END SOLUTION

    def get_metrics(self) -> tuple[bytes, str]:
        """The text exposition of every worker's metrics (multiprocess) or this process's."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def mark_process_dead() -> None:
    """Tell multiprocess mode this worker is gone, so its live gauges stop counting."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class RouteTemplates:
    """The full route template (`/api/v1/session/{session_id}`) of a request, never its raw path."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self._routes = routes
        self._by_route: dict[int, str] | None = None
        self._patterns: list[tuple[re.Pattern[str], str]] = []

    def _build(self) -> dict[int, str]:
        # Built on first use, when every router has been included.
        contexts = list(iter_route_contexts(self._routes))
        self._patterns = [(compile_path(c.path_format)[0], c.path_format) for c in contexts if c.path_format]
        return {id(context.original_route): context.path_format or UNMATCHED for context in contexts}

    def template(self, scope: Scope) -> str:
        """The template of the route that served the request; for one stopped before routing (a 429), the
        template its path would have matched."""
        if self._by_route is None:
            self._by_route = self._build()
        # BEGIN SOLUTION TODO 20: label with the route template, never the raw path
        route = scope.get("route")
        if route is not None and id(route) in self._by_route:
            return self._by_route[id(route)]
        path = scope.get("path", "")
        return next((template for pattern, template in self._patterns if pattern.match(path)), UNMATCHED)
        # BEGIN STARTER
        # return str(scope.get("path", UNMATCHED))
        # END STARTER
        # END SOLUTION


class MetricsMiddleware:
    """Pure ASGI middleware that counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: RouteTemplates) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            endpoint = self.templates.template(scope)
            self.metrics.track_request_metrics(scope["method"], endpoint, status, time.perf_counter() - started)
