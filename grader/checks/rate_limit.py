"""Rate limiting, against a server started with a small limit (the `limits` profile: 20 per 300 s)."""

from __future__ import annotations

import asyncio

import httpx

from .. import hints
from ..context import Context
from ..core import ADVANCED, Failure, check
from ..expect import error_response, show, status, that
from ..profiles import RATE_LIMIT, RATE_LIMIT_WINDOW

LIMITED = "/api/v1/sessions"
EXEMPT = ("/", "/health", "/docs", "/openapi.json")
HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")
MOST_SECONDS = RATE_LIMIT_WINDOW + 1  # rounding a whole window up may add a second


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name, "")
    return int(value) if value.isdigit() else None


async def _remaining(client: httpx.AsyncClient) -> int:
    """What the limiter says is left (this request spent one)."""
    response = await client.get(LIMITED)
    status(response, 200, cause="the allowance ran out earlier than the limit says")
    remaining = _int_header(response, "x-ratelimit-remaining")
    that(remaining is not None, "an integer X-RateLimit-Remaining", repr(response.headers.get(HEADERS[1])))
    return int(remaining or 0)


async def _exhaust(client: httpx.AsyncClient) -> httpx.Response:
    """Spend the allowance until a 429 comes back; return it."""
    for _ in range(RATE_LIMIT + 5):
        response = await client.get(LIMITED)
        if response.status_code == 429:
            return response
    raise Failure(f"a 429 within {RATE_LIMIT + 5} requests (RATE_LIMIT_REQUESTS={RATE_LIMIT})", "none came")


@check(2, profile="limits", hint=hints.RATE_LIMIT)
async def headers(ctx: Context) -> None:
    """A limited route (GET /api/v1/sessions) sends X-RateLimit-Limit, -Remaining and -Reset."""
    response = await ctx.api.get(LIMITED)
    status(response, 200)
    values = {name: response.headers.get(name) for name in HEADERS}
    that(all(value is not None for value in values.values()), "the three X-RateLimit-* headers", f"{values}")
    limit, remaining, reset = (_int_header(response, name) for name in HEADERS)
    that(limit == RATE_LIMIT, f"X-RateLimit-Limit {RATE_LIMIT} (RATE_LIMIT_REQUESTS)", f"{values[HEADERS[0]]!r}")
    that(remaining is not None and 0 <= remaining < RATE_LIMIT, "a Remaining below the limit", f"{values}")
    that(reset is not None and 1 <= reset <= MOST_SECONDS, f"a Reset of 1-{RATE_LIMIT_WINDOW} s", f"{values}")


@check(3, profile="limits", depends_on=("headers",), hint=hints.RATE_LIMIT)
async def exact_burst(ctx: Context) -> None:
    """A concurrent burst is admitted exactly up to the remaining allowance; the rest get 429 rate_limited."""
    remaining = await _remaining(ctx.api)
    responses = await asyncio.gather(*(ctx.api.get(LIMITED) for _ in range(remaining + 5)))
    admitted = sum(response.status_code == 200 for response in responses)
    refused = [response for response in responses if response.status_code == 429]
    that(
        admitted == remaining and len(refused) == 5,
        f"{remaining} admitted and 5 refused out of a burst of {remaining + 5}",
        f"{admitted} admitted, {len(refused)} refused",
        cause="the count is read and written in two steps (not atomic), or off by one",
    )
    error_response(refused[0], 429, "rate_limited")


@check(1, profile="limits", depends_on=("headers",), hint=hints.RETRY_AFTER)
async def retry_after(ctx: Context) -> None:
    """A 429 answer carries Retry-After: the seconds to wait, 1 to RATE_LIMIT_WINDOW."""
    response = await _exhaust(ctx.api)
    seconds = _int_header(response, "retry-after")
    that(
        seconds is not None and 1 <= seconds <= MOST_SECONDS,
        f"Retry-After of 1-{RATE_LIMIT_WINDOW} seconds",
        f"Retry-After {response.headers.get('retry-after')!r}",
    )


@check(1, profile="limits", depends_on=("headers",), hint=hints.EXEMPT)
async def exempt(ctx: Context) -> None:
    """/, /health, /docs and /openapi.json (and the advanced lab's /api/v1/metrics) are never limited."""
    await _exhaust(ctx.api)
    paths = EXEMPT + (("/api/v1/metrics",) if ctx.lab == "advanced" else ())
    for path in paths:
        response = await ctx.api.get(path)
        that(response.status_code == 200, f"GET {path} answered 200 after the limit was reached", show(response))


@check(2, labs=ADVANCED, profile="limits", depends_on=("exact_burst",), hint=hints.RATE_LIMIT_USER)
async def per_user(ctx: Context) -> None:
    """The limit is per user: once demo has used up their allowance, alice is still admitted."""
    await _exhaust(ctx.api)
    alice = await ctx.token("alice")
    response = await ctx.anon.get(LIMITED, headers=ctx.bearer(alice))
    that(response.status_code == 200, "alice admitted while demo is limited", show(response))
