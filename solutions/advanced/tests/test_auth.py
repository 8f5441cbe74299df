"""Authentication and ownership: who may call, and whose sessions and tasks they see."""

import base64
import hashlib
import hmac
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jose import jwt

from app.main import create_app
from tests.support.services import RedisServer

from .conftest import login, make_settings

ME = "/api/v1/auth/me"
SECRET = "test-secret-key"


def _token(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    now = datetime.now(UTC)
    base = {"sub": "demo", "iat": now, "nbf": now, "exp": now + timedelta(minutes=5), "type": "access"}
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


def _assert_401(response: Any) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_login_returns_a_bearer_token_that_works(client: TestClient) -> None:
    """A correct password gives a bearer token with its lifetime, and /auth/me names its user."""
    response = client.post("/api/v1/auth/login", data={"username": "demo", "password": "demo-password"})
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    me = client.get(ME, headers={"Authorization": f"Bearer {body['access_token']}"}).json()
    assert me == {"username": "demo", "full_name": "Demo User", "disabled": False}


def test_wrong_password_and_unknown_user_look_the_same(client: TestClient) -> None:
    """Both get the same 401 body (but for the request id), in comparable time."""
    timings, bodies = [], []
    for username, password in [("demo", "wrong-password"), ("nobody", "wrong-password")] * 3:
        started = time.perf_counter()
        response = client.post("/api/v1/auth/login", data={"username": username, "password": password})
        timings.append(time.perf_counter() - started)
        _assert_401(response)
        bodies.append({k: v for k, v in response.json().items() if k != "request_id"})
    assert all(body == bodies[0] for body in bodies)
    known, unknown = sorted(timings[0::2])[1], sorted(timings[1::2])[1]
    # Both verify a bcrypt hash; a missing dummy verification would make unknown users far faster.
    assert unknown > known / 4


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(_token({"exp": datetime.now(UTC) - timedelta(seconds=5)}), id="expired"),
        pytest.param(_token({"nbf": datetime.now(UTC) + timedelta(minutes=5)}), id="not-yet-valid"),
        pytest.param(_token({}, key="another-key"), id="wrong-key"),
        pytest.param(_token({"sub": "nobody"}), id="unknown-user"),
        pytest.param(_token({"type": "refresh"}), id="wrong-type"),
        pytest.param(_token({}, algorithm="HS512"), id="other-algorithm"),
        pytest.param("not.a.token", id="garbage"),
    ],
)
def test_bad_tokens_get_401(client: TestClient, token: str) -> None:
    """Expired, early, foreign, forged or unknown-user tokens are refused with 401 and WWW-Authenticate."""
    _assert_401(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


def test_alg_none_and_tampered_and_subjectless_tokens_get_401(client: TestClient) -> None:
    """An unsigned token, a token whose payload was changed, and one without `sub` are refused."""

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    exp = int(time.time()) + 300
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': 'demo', 'exp': exp, 'type': 'access'})}."
    header, _, signature = _token({}).split(".")
    tampered = f"{header}.{b64({'sub': 'alice', 'exp': exp, 'type': 'access'})}.{signature}"
    subjectless = jwt.encode({"exp": exp, "type": "access"}, SECRET, algorithm="HS256")
    for token in (unsigned, tampered, subjectless):
        _assert_401(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


def test_missing_token_gets_401_on_every_protected_route(client: TestClient) -> None:
    """No Authorization header: 401 on the agent's routes."""
    for method, path in [
        ("POST", "/api/v1/query"),
        ("POST", "/api/v1/query/stream"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/session/abc"),
        ("DELETE", "/api/v1/session/abc"),
        ("POST", "/api/v1/tasks"),
        ("GET", "/api/v1/tasks/abc"),
        ("GET", ME),
    ]:
        _assert_401(client.request(method, path, json={"query": "hi"}))


def test_inactive_user_gets_403(client: TestClient) -> None:
    """The disabled demo user can log in but may not use the API."""
    headers = login(client, "inactive")
    response = client.get(ME, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_password_over_72_bytes_is_422(client: TestClient) -> None:
    """bcrypt reads at most 72 bytes, so longer passwords are refused instead of truncated."""
    response = client.post("/api/v1/auth/login", data={"username": "demo", "password": "é" * 37})
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"


def test_users_see_only_their_own_sessions_and_tasks(client: TestClient) -> None:
    """Another user's session or task id answers 404, and cannot be used to continue their conversation."""
    demo, alice = login(client, "demo"), login(client, "alice")
    sid = client.post("/api/v1/query", json={"query": "my name is Dee"}, headers=demo).json()["session_id"]
    task = client.post("/api/v1/tasks", json={"query": "hi"}, headers=demo).json()["task_id"]
    assert client.get(f"/api/v1/session/{sid}", headers=alice).status_code == 404
    assert client.delete(f"/api/v1/session/{sid}", headers=alice).status_code == 404
    assert client.get(f"/api/v1/tasks/{task}", headers=alice).status_code == 404
    assert client.get("/api/v1/sessions", headers=alice).json()["count"] == 0
    assert (
        client.post("/api/v1/query", json={"query": "what is my name?", "session_id": sid}, headers=alice).status_code
        == 404
    )
    stream = client.post("/api/v1/query/stream", json={"query": "what is my name?", "session_id": sid}, headers=alice)
    assert stream.status_code == 404
    assert client.get(f"/api/v1/session/{sid}", headers=demo).json()["message_count"] == 2


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: dict[str, Any], key: bytes, digest: Any = hashlib.sha256) -> str:
    """A token with any header we like, HMAC-signed with `key`: what a forger can build without a JWT library."""
    exp = int(time.time()) + 300
    claims = {"sub": "demo", "iat": exp - 300, "nbf": exp - 300, "exp": exp, "type": "access"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize(
    "token",
    [
        # RS256/HS256 confusion: the server's secret used as if it were an RSA public key for an HMAC.
        pytest.param(_signed({"alg": "RS256", "typ": "JWT"}, SECRET.encode()), id="rs256-header-hmac-signed"),
        pytest.param(_signed({"alg": "ES256", "typ": "JWT"}, SECRET.encode()), id="es256-header-hmac-signed"),
        pytest.param(_signed({"alg": "HS384", "typ": "JWT"}, SECRET.encode(), hashlib.sha384), id="hs384"),
        pytest.param(_signed({"alg": "none", "typ": "JWT"}, SECRET.encode()), id="none-with-signature"),
        pytest.param(_signed({"alg": "NONE", "typ": "JWT"}, SECRET.encode()), id="uppercase-none"),
        # The attacker's own key, offered in the header (jwk) or named by kid: the server must never use it.
        pytest.param(
            _signed({"alg": "HS256", "jwk": {"kty": "oct", "k": _b64(b"attacker-key")}}, b"attacker-key"),
            id="embedded-jwk",
        ),
        pytest.param(_signed({"alg": "HS256", "kid": "../../dev/null"}, b""), id="kid-path-empty-key"),
    ],
)
def test_algorithm_confusion_and_foreign_keys_get_401(client: TestClient, token: str) -> None:
    """Only HS256 with SECRET_KEY verifies: another algorithm in the header, or a key the token brings, is refused."""
    _assert_401(client.get(ME, headers={"Authorization": f"Bearer {token}"}))


def test_a_real_rs256_token_gets_401(client: TestClient) -> None:
    """A token properly signed with an RSA key pair (the other half of the confusion attack) is refused too."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _assert_401(client.get(ME, headers={"Authorization": f"Bearer {_token({}, key=pem.decode(), algorithm='RS256')}"}))


@pytest.mark.parametrize("user_cache_seconds", [0.0, 0.5])
def test_a_deleted_users_token_gets_401(tmp_path: Path, user_cache_seconds: float) -> None:
    """A token stays signed after its user is deleted, but it no longer lets anyone in (nor on the agent's routes):
    at once without the user cache, and once the cached row is older than USER_CACHE_SECONDS with it."""
    database = tmp_path / "lab.db"
    settings = make_settings(database, user_cache_seconds=user_cache_seconds)
    with TestClient(create_app(settings)) as client:
        headers = login(client, "alice")
        assert client.get(ME, headers=headers).status_code == 200
        with sqlite3.connect(database) as connection:
            assert connection.execute("DELETE FROM users WHERE username = 'alice'").rowcount == 1
        if user_cache_seconds:
            assert client.get(ME, headers=headers).status_code == 200  # the row read a moment ago, reused
            time.sleep(user_cache_seconds + 0.1)
        _assert_401(client.get(ME, headers=headers))
        _assert_401(client.get("/api/v1/sessions", headers=headers))
        _assert_401(client.post("/api/v1/query", json={"query": "hi"}, headers=headers))


@pytest.mark.parametrize(
    ("username", "password"),
    [("demo", "demo\x00password"), ("nobody", "a\x00"), ("de\x00mo", "demo-password")],
    ids=["nul-in-password", "nul-in-password-unknown-user", "nul-in-username"],
)
def test_credentials_with_nul_are_422_not_500(client: TestClient, username: str, password: str) -> None:
    """bcrypt cannot hash a NUL byte and PostgreSQL cannot store one: such credentials are refused up front."""
    response = client.post("/api/v1/auth/login", data={"username": username, "password": password})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_error"


def test_login_is_rate_limited_by_client_address(tmp_path: Path) -> None:
    """One address trying many usernames is stopped by the per-address limit of the middleware."""
    with TestClient(create_app(make_settings(tmp_path / "a.db", rate_limit_requests=5))) as client:
        statuses = [
            client.post("/api/v1/auth/login", data={"username": f"user{n}", "password": "guess"}).status_code
            for n in range(7)
        ]
        assert statuses == [401] * 5 + [429] * 2
        refused = client.post("/api/v1/auth/login", data={"username": "demo", "password": "demo-password"})
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1


def _from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def _log_in(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", data={"username": username, "password": password})


@pytest.mark.anyio
async def test_failed_logins_are_limited_per_username_from_any_address(tmp_path: Path) -> None:
    """LOGIN_MAX_FAILURES wrong passwords for one username, from different addresses, lock that username (429 with
    Retry-After, even for the right password); other usernames are unaffected; an unknown username is locked the
    same way (nothing to learn from it); a successful login clears the count."""
    settings = make_settings(tmp_path / "u.db", login_max_failures=3, login_failure_window=60)
    app = create_app(settings)
    async with LifespanManager(app):
        clients = [_from(app, f"203.0.113.{n}") for n in range(1, 5)]
        try:
            for client in clients[:3]:
                assert (await _log_in(client, "alice", "wrong")).status_code == 401
                assert (await _log_in(client, "nobody", "wrong")).status_code == 401
            for username, password in [("alice", "alice-password"), ("nobody", "wrong")]:
                locked = await _log_in(clients[3], username, password)
                assert locked.status_code == 429, locked.text
                assert locked.json()["error"] == "rate_limited"
                assert 1 <= int(locked.headers["Retry-After"]) <= 60
            # A success clears the count: two failures, a success, two failures, and the right password still works.
            for _ in range(2):
                for _ in range(2):
                    assert (await _log_in(clients[0], "demo", "wrong")).status_code == 401
                assert (await _log_in(clients[1], "demo", "demo-password")).status_code == 200
        finally:
            for client in clients:
                await client.aclose()


def test_login_throttle_fails_open_without_redis(tmp_path: Path, redis: RedisServer) -> None:
    """With Redis stopped, logins go on (401 or 200, never 5xx), as the request rate limit does."""
    settings = make_settings(tmp_path / "r.db", redis_url=redis.url, login_max_failures=2)
    with TestClient(create_app(settings)) as client:
        redis.stop()
        statuses = [
            client.post("/api/v1/auth/login", data={"username": "demo", "password": "wrong"}).status_code
            for _ in range(3)
        ]
        assert statuses == [401] * 3
        login(client)


def test_error_bodies_never_echo_credentials(client: TestClient) -> None:
    """A rejected password, token or API key is never repeated back in the error body."""
    password, token = "hunter2-secret-password", "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
    bodies = [
        client.post("/api/v1/auth/login", data={"username": "demo", "password": password}).text,
        client.post("/api/v1/auth/login", data={"username": "demo", "password": password * 4}).text,
        client.get(ME, headers={"Authorization": f"Bearer {token}"}).text,
        client.post(
            "/api/v1/query",
            json={"query": "", "api_key": "sk-secret-api-key"},
            headers={**login(client), "X-Api-Key": "sk-secret-api-key"},
        ).text,
    ]
    for body in bodies:
        assert password not in body and token not in body and "sk-secret-api-key" not in body, body
