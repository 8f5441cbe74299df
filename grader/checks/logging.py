"""Structured logs (advanced lab): JSON lines on stdout, their fields, the access line, and no secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .. import hints
from ..context import DEMO_USERS, LOGIN_PATH, Context
from ..core import ADVANCED, check
from ..expect import iso_timestamp, nonce, shorten, that

ACCESS_FIELDS = ("method", "path", "status_code", "duration_ms", "client", "request_id")


def _parsed(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def lines_of_request(ctx: Context, request_id: str, seconds: float = 3.0) -> list[dict[str, Any]]:
    """The JSON lines of one request, once its access line (the one with status_code) is written."""
    for _ in range(int(seconds / 0.05)):
        records = [record for line in ctx.log.serving_lines() if (record := _parsed(line))]
        mine = [record for record in records if record.get("request_id") == request_id]
        if any("status_code" in record for record in mine):
            return mine
        await asyncio.sleep(0.05)
    return []


@check(2, labs=ADVANCED, depends_on=("api.query_shape",), hint=hints.LOGGING)
async def json_lines(ctx: Context) -> None:
    """Every line the stage writes to stdout while serving is one JSON object."""
    await ctx.anon.get("/health")
    lines = ctx.log.serving_lines()
    bad = [line for line in lines if _parsed(line) is None]
    that(
        lines and not bad,
        "only JSON objects, one per line",
        f"{len(bad)} other line(s), e.g. {shorten(bad[0] if bad else '(no lines)', 160)!r}",
    )


@check(2, labs=ADVANCED, depends_on=("json_lines",), hint=hints.LOGGING)
async def fields(ctx: Context) -> None:
    """Every log line has timestamp (ISO 8601, UTC), level and event."""
    records = [record for line in ctx.log.serving_lines() if (record := _parsed(line))]
    for record in records:
        complete = iso_timestamp(record.get("timestamp"), utc=True) and record.get("level") and record.get("event")
        that(complete, "timestamp (ISO 8601 UTC), level and event", shorten(json.dumps(record), 200))


@check(2, labs=ADVANCED, depends_on=("json_lines", "auth.login"), hint=hints.ACCESS_LOG)
async def access_line(ctx: Context) -> None:
    """One access line per request, with method, path, status_code, duration_ms, client, request_id and user."""
    request_id = f"grader-log-{nonce()}"
    await ctx.api.get("/api/v1/auth/me", headers={"X-Request-ID": request_id})
    access = [record for record in await lines_of_request(ctx, request_id) if "status_code" in record]
    that(len(access) == 1, f"one access line with request_id {request_id}", f"{len(access)} such line(s)")
    line = access[0]
    missing = [name for name in ACCESS_FIELDS if line.get(name) in (None, "")]
    that(
        not missing,
        f"an access line with {', '.join(ACCESS_FIELDS)}",
        f"missing {missing}: {shorten(json.dumps(line), 200)}",
    )
    expected = {"method": "GET", "path": "/api/v1/auth/me", "status_code": 200, "user": "demo"}
    wrong = {key: line.get(key) for key, value in expected.items() if line.get(key) != value}
    that(not wrong, f"the request's values {expected}", f"{wrong}")
    that(isinstance(line["duration_ms"], (int, float)), "duration_ms as a number", repr(line["duration_ms"]))


@check(3, labs=ADVANCED, depends_on=("json_lines", "auth.login"), hint=hints.SECRETS_IN_LOGS)
async def no_secrets(ctx: Context) -> None:
    """No password, token, Authorization value or SECRET_KEY ever appears in the log."""
    wrong_password = f"grader-secret-{nonce()}"
    await ctx.anon.post(LOGIN_PATH, data={"username": "demo", "password": wrong_password})
    await ctx.api.get("/api/v1/auth/me")
    await asyncio.sleep(0.3)  # let the last lines reach the file
    sensitive = {"a password": [*DEMO_USERS.values(), wrong_password], "the SECRET_KEY": [ctx.secret_key]}
    sensitive["a token"] = [part for token in ctx.tokens.values() for part in (token, token.rsplit(".", 1)[-1])]
    text = ctx.log.everything()
    leaked = [what for what, values in sensitive.items() if any(value and value in text for value in values)]
    that(not leaked, "no secret in the log", f"the log contains {', '.join(leaked)}")
