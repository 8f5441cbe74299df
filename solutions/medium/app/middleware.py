"""Pure ASGI middleware: request ids with an access log line, and a simple in-memory rate limit."""

import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logging_config import request_id_var
from .models import ErrorResponse

access_logger = logging.getLogger("app.access")
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class RequestIdMiddleware:
    """Gives every request an id (the client's, if sane), echoes it in X-Request-ID and logs the request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _SANE_REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]  # the access line reports the status the client got
                # BEGIN SOLUTION TODO 7: put the request id on every response
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                # BEGIN STARTER
                # END STARTER
                # END SOLUTION
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            client = scope.get("client")
            access_logger.info(
                "%s %s %d %.1fms client=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                client[0] if client else "-",
            )
            request_id_var.reset(token)


class RateLimitMiddleware:
    """At most `limit` requests per `window` seconds per client address, counted in a sliding window.

    In memory, so per process: the advanced lab moves the window to Redis to share it between workers.
    """

    def __init__(self, app: ASGIApp, *, limit: int, window: float, exempt_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.limit, self.window = limit, window
        self.exempt_paths = frozenset(exempt_paths)
        self._hits: dict[str, deque[float]] = {}
        self._calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        allowed, remaining, reset = self._admit(client[0] if client else "unknown", time.monotonic())
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(reset),
        }
        if not allowed:
            request_id = scope.get("state", {}).get("request_id", "-")
            body = ErrorResponse(
                error="rate_limited",
                detail=f"Rate limit of {self.limit} requests per {self.window:g} s exceeded; retry in {reset} s",
                request_id=request_id,
            )
            headers["X-Request-ID"] = request_id  # as on every ErrorResponse: the body's id in the header too
            response = JSONResponse(body.model_dump(), status_code=429, headers={**headers, "Retry-After": str(reset)})
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(headers)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _admit(self, client: str, now: float) -> tuple[bool, int, int]:
        self._calls += 1
        if self._calls % 1024 == 0:
            self._forget_idle_clients(now)
        hits = self._hits.setdefault(client, deque())  # this client's admitted requests, oldest first
        # BEGIN SOLUTION TODO 8: admit at most `limit` requests per client in a sliding window
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        allowed = len(hits) < self.limit
        if allowed:
            hits.append(now)
        reset = math.ceil(hits[0] + self.window - now)
        return allowed, self.limit - len(hits), max(reset, 1)
        # BEGIN STARTER
        # return True, self.limit - len(hits), math.ceil(self.window)
        # END STARTER
        # END SOLUTION

    def _forget_idle_clients(self, now: float) -> None:
        """Drop clients with no hit inside the window, so the table does not grow without bound."""
        for client in [c for c, hits in self._hits.items() if not hits or hits[-1] <= now - self.window]:
            del self._hits[client]
