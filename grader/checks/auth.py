"""Authentication (advanced lab): login, the tokens that must be refused, inactive users, and ownership."""

from __future__ import annotations

import time
from typing import Any

import httpx

from .. import hints
from ..context import DEMO_USERS, LOGIN_PATH, Context
from ..core import ADVANCED, check
from ..expect import Rules, error_response, fields, json_object, nonce, show, that
from ..tokens import claims, sign, unsigned, with_claims_of
from .sessions import ask

ME = "/api/v1/auth/me"
PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/v1/query", {"query": "hi"}),
    ("POST", "/api/v1/query/stream", {"query": "hi"}),
    ("GET", "/api/v1/sessions", None),
    ("GET", "/api/v1/session/grader-someone", None),
    ("DELETE", "/api/v1/session/grader-someone", None),
    ("POST", "/api/v1/tasks", {"query": "hi"}),
    ("GET", "/api/v1/tasks/grader-someone", None),
    ("GET", ME, None),
]


def _unauthorized(response: httpx.Response, label: str) -> dict[str, Any]:
    body = error_response(response, 401, "unauthorized", cause=f"for {label}")
    challenge = response.headers.get("www-authenticate", "")
    that(challenge.lower().startswith("bearer"), f"WWW-Authenticate: Bearer for {label}", repr(challenge))
    return body


async def _log_in(ctx: Context, user: str, password: str) -> httpx.Response:
    return await ctx.anon.post(LOGIN_PATH, data={"username": user, "password": password})


@check(3, labs=ADVANCED, public=True, hint=hints.AUTH_LOGIN)
async def login(ctx: Context) -> None:
    """POST /api/v1/auth/login (an OAuth2 form) with demo / demo-password answers a bearer token."""
    body = json_object(await _log_in(ctx, "demo", DEMO_USERS["demo"]))
    rules: Rules = {"access_token": (str, "a string"), "token_type": (str, '"bearer"'), "expires_in": (int, "seconds")}
    fields(body, rules, "a token answer")
    that(body["token_type"].lower() == "bearer", 'token_type "bearer"', repr(body["token_type"]))
    that(body["expires_in"] > 0, "expires_in > 0 seconds", repr(body["expires_in"]))
    ctx.use_token("demo", body["access_token"])


@check(2, labs=ADVANCED, depends_on=("login",), hint=hints.AUTH_PASSWORD)
async def login_failures(ctx: Context) -> None:
    """A wrong password and an unknown user get the same 401 unauthorized, with WWW-Authenticate: Bearer."""
    wrong = _unauthorized(await _log_in(ctx, "demo", f"wrong-{nonce()}"), "a wrong password")
    unknown = _unauthorized(await _log_in(ctx, f"grader{nonce()}", DEMO_USERS["demo"]), "an unknown user")
    same = wrong["detail"] == unknown["detail"]
    that(same, "the same detail for both (telling them apart reveals usernames)", f"{wrong} vs {unknown}")


@check(1, labs=ADVANCED, depends_on=("login",), hint=hints.AUTH_VERIFY)
async def me(ctx: Context) -> None:
    """GET /api/v1/auth/me answers the logged-in user: username, full_name, disabled."""
    body = json_object(await ctx.api.get(ME))
    fields(
        body,
        {"username": (str, "demo"), "full_name": ((str, type(None)), "a name"), "disabled": (bool, "false")},
        "a user",
    )
    that(body["username"] == "demo" and body["disabled"] is False, "demo, not disabled", str(body))


@check(2, labs=ADVANCED, public=True, hint=hints.AUTH_VERIFY)
async def no_token(ctx: Context) -> None:
    """Without a token, every API route answers 401 unauthorized with WWW-Authenticate: Bearer."""
    for method, path, body in PROTECTED:
        _unauthorized(await ctx.anon.request(method, path, json=body), f"{method} {path}")


@check(3, labs=ADVANCED, depends_on=("login",), hint=hints.AUTH_VERIFY)
async def bad_tokens(ctx: Context) -> None:
    """Garbage, forged, tampered, unsigned and expired tokens answer 401; the same claims, well signed, pass."""
    token, now = ctx.tokens["demo"], int(time.time())
    payload = claims(token) | {"exp": now + 600}
    control = await ctx.anon.get(ME, headers=ctx.bearer(sign(payload, ctx.secret_key)))
    that(
        control.status_code == 200,
        "a token with the login's claims, signed with SECRET_KEY (HS256), accepted",
        show(control),
        cause="the stage does not sign and verify tokens with SECRET_KEY and ALGORITHM from the environment",
    )
    variants = {
        "a garbage token": "not-a-jwt",
        "a token signed with another key": sign(payload, f"not-{ctx.secret_key}"),
        "a token with altered claims": with_claims_of(token, payload | {"sub": "alice", "exp": now + 900}),
        "an unsigned (alg none) token": unsigned(payload),
        "an expired token": sign(payload | {"exp": now - 120}, ctx.secret_key),
    }
    for label, variant in variants.items():
        _unauthorized(await ctx.anon.get(ME, headers=ctx.bearer(variant)), label)


@check(2, labs=ADVANCED, depends_on=("login",), hint=hints.AUTH_ACTIVE)
async def inactive_user(ctx: Context) -> None:
    """The inactive user is refused with 403 forbidden (at login, or on the first request)."""
    response = await _log_in(ctx, "inactive", DEMO_USERS["inactive"])
    if response.status_code == 200:
        token = str(response.json().get("access_token"))
        response = await ctx.anon.get(ME, headers=ctx.bearer(token))
    error_response(response, 403, "forbidden")


@check(3, labs=ADVANCED, depends_on=("login", "api.query_shape"), hint=hints.OWNERSHIP)
async def ownership(ctx: Context) -> None:
    """Another user's session and task answer 404 to alice, and are not in her list."""
    session_id = f"grader-{nonce()}"
    await ask(ctx, f"Hello [{nonce()}]", session_id)
    task = json_object(await ctx.api.post("/api/v1/tasks", json={"query": f"Hello [{nonce()}]"}), 202)
    alice = ctx.bearer(await ctx.token("alice"))
    session_path = f"/api/v1/session/{session_id}"
    for method, path in (("GET", session_path), ("DELETE", session_path), ("GET", str(task["status_url"]))):
        response = await ctx.anon.request(method, path, headers=alice)
        error_response(response, 404, "not_found", cause=f"alice's {method} {path} of demo's resource")
    listed = json_object(await ctx.anon.get("/api/v1/sessions", headers=alice)).get("sessions") or []
    that(all(s.get("session_id") != session_id for s in listed), "demo's session not in alice's list", "listed")
    json_object(await ctx.api.get(session_path), cause="demo's session must survive alice's DELETE")
