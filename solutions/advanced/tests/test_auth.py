"""Authentication and ownership: who may call, and whose sessions and tasks they see."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jose import jwt

from .conftest import login

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
    import base64
    import json

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
