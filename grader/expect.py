"""Assertions for checks: each raises a Failure that says what was expected and what was observed."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from .core import Failure

ERROR_FIELDS = ("error", "detail", "request_id")
Rules = Mapping[str, tuple[type | tuple[type, ...], str]]  # field -> (accepted types, what it means)
_NONCE_LETTERS = "bdfghkmnpqvxz"  # no vowels and no s, j, t, w: a nonce never spells a word the agent reacts to


def nonce(length: int = 8) -> str:
    """A random lowercase word that makes a query or an id unique to this run (and never a cache hit)."""
    return "".join(secrets.choice(_NONCE_LETTERS) for _ in range(length))


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(response: httpx.Response) -> str:
    """A response in a line: status, content type, start of the body."""
    kind = response.headers.get("content-type", "no content type").split(";")[0]
    try:
        body = shorten(response.text, 200)
    except httpx.ResponseNotRead:
        body = ""
    return f"HTTP {response.status_code} ({kind}) {body}".rstrip()


def that(condition: object, expected: str, observed: str, *, cause: str = "") -> None:
    if not condition:
        raise Failure(expected, observed, cause=cause)


def status(response: httpx.Response, code: int, *, cause: str = "") -> None:
    that(response.status_code == code, f"HTTP {code}", show(response), cause=cause)


def json_object(response: httpx.Response, code: int = 200, *, cause: str = "") -> dict[str, Any]:
    """The response's JSON object body, after checking its status."""
    status(response, code, cause=cause)
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    that(isinstance(body, dict), "a JSON object body", show(response), cause=cause)
    return dict(body)


def error_response(response: httpx.Response, code: int, error: str | None, *, cause: str = "") -> dict[str, Any]:
    """An ErrorResponse `{error, detail, request_id}` with this status and error code, naming its X-Request-ID."""
    body = json_object(response, code, cause=cause)
    expected = f"an ErrorResponse {{error: {error or '...'}, detail, request_id}}"
    that(all(name in body for name in ERROR_FIELDS), expected, show(response), cause=cause)
    if error is not None:
        that(body["error"] == error, f'"error": "{error}"', f'"error": {json.dumps(body["error"])}', cause=cause)
    that(isinstance(body["detail"], str) and body["detail"], "a detail that says what went wrong", show(response))
    header = response.headers.get("x-request-id")
    that(
        body["request_id"] == header,
        "request_id equal to the X-Request-ID header",
        f"request_id {body['request_id']!r}, header {header!r}",
    )
    return body


def field_problems(body: dict[str, Any], rules: Rules) -> list[str]:
    """Which fields are missing or of the wrong type, as `name (why)`; `rules` maps a field to (types, meaning)."""
    problems = []
    for name, (types, meaning) in rules.items():
        value = body.get(name)
        if name not in body:
            problems.append(f"{name} is missing")
        elif not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
            problems.append(f"{name} is {json.dumps(value)[:60]}, not {meaning}")
    return problems


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def fields(body: dict[str, Any], rules: Rules, what: str) -> None:
    problems = field_problems(body, rules)
    that(not problems, f"{what} with {', '.join(rules)}", "; ".join(problems))


_ISO_UTC = re.compile(r"(Z|[+-]00:?00)$")


def iso_timestamp(value: object, *, utc: bool = False) -> bool:
    """Whether `value` is an ISO 8601 date-time (with `utc`: one that says it is UTC)."""
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return not utc or bool(_ISO_UTC.search(value))
