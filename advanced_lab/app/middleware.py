"""Pure ASGI middleware: request context with a structured access log, and the Redis rate limit."""

import re
import secrets
import time
from collections.abc import Iterable

import orjson
import structlog
from redis.exceptions import RedisError
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import TokenVerifier
from .exceptions import UnauthorizedError
from .logging_config import get_logger
from .rate_limit import RateLimiter

access_logger = get_logger("app.access")
logger = get_logger(__name__)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class InFlight:
    """How many HTTP requests this worker is serving: background work waits for idle moments."""

    def __init__(self) -> None:
        self.requests = 0

    def idle(self) -> bool:
        """True when no request is being served."""
        return self.requests == 0


class RequestContextMiddleware:
    """Gives every request an id (the client's, if sane), binds it to the log context and logs the request."""

    def __init__(self, app: ASGIApp, in_flight: InFlight | None = None) -> None:
        self.app = app
        self.in_flight = in_flight or InFlight()
        # Bound once, with the logging configuration of the app being built: the module's lazy logger would
        # look the configuration up again for every line.
        self.access_log = access_logger.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = Headers(scope=scope).get("x-request-id", "")
        request_id = offered if _SANE_REQUEST_ID.match(offered) else secrets.token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        # TODO 3: start each request with a clean log context that carries its request id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id  # set, not added: errors carry it already
            await send(message)

        self.in_flight.requests += 1
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.in_flight.requests -= 1
            # TODO 4: one access line per request: method, path, status, duration, client, user
            self.access_log.info("request")


class BodySizeLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413: at once when Content-Length says so, or as soon as
    a streamed body passes the limit."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(scope, send, 413, "payload_too_large", self._detail(), {})
            return
        received, refused = 0, False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    await _send_error(scope, send, 413, "payload_too_large", self._detail(), {})
                    return {"type": "http.disconnect"}  # the app stops reading, as if the client left
            return message

        async def send_unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counting_receive, send_unless_refused)
        except ClientDisconnect:
            if not refused:
                raise

    def _detail(self) -> str:
        return f"The request body is larger than {self.max_bytes} bytes"


class RateLimitMiddleware:
    """Per user (from a valid bearer token) or per client address; exempt paths pass untouched.

    If Redis cannot be reached the request goes on, and the log says so: a limiter outage must not become
    an API outage (`/health` reports Redis down).
    """

    def __init__(
        self, app: ASGIApp, *, limiter: RateLimiter, verifier: TokenVerifier, exempt_paths: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.verifier = verifier
        self.exempt_paths = frozenset(exempt_paths)

    def _client_key(self, scope: Scope) -> str:
        # TODO 17: count logged-in clients by user (from a valid token), the others by address
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        try:
            decision = await self.limiter.hit(self._client_key(scope))
        except RedisError as exc:
            logger.warning("rate limit skipped: Redis unavailable", error=type(exc).__name__)
            await self.app(scope, receive, send)
            return
        headers = decision.headers()
        # TODO 18: refuse with 429 rate_limited, the headers and Retry-After

        raw = _raw_headers(headers)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *raw]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _send_error(scope: Scope, send: Send, status: int, code: str, detail: str, headers: dict[str, str]) -> None:
    """Answer with an ErrorResponse before the app runs (the request id is already in the scope)."""
    request_id = scope.get("state", {}).get("request_id", "-")
    body = orjson.dumps({"error": code, "detail": detail, "request_id": request_id})
    raw = [*_raw_headers(headers), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _raw_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """Headers as an ASGI message carries them, for a response that does not have them yet (no route or error
    handler sets the rate-limit headers)."""
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
