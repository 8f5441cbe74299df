"""The medium lab's API, kept in the advanced service, now behind authentication."""

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.services import postgres_database
from tests.support.sse import parse_sse
from tests.support.stage import free_port

from .conftest import login, make_settings


def test_root_and_openapi_document_every_endpoint(client: TestClient) -> None:
    """Root links docs and health; the schema has every contract endpoint, OAuth2 security and model examples."""
    assert client.get("/").json()["docs_url"] == "/docs"
    schema = client.get("/openapi.json").json()
    routes = {(path, method) for path, methods in schema["paths"].items() for method in methods}
    assert {
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/me", "get"),
        ("/api/v1/metrics", "get"),
        ("/api/v1/query", "post"),
        ("/api/v1/query/stream", "post"),
        ("/api/v1/session/{session_id}", "get"),
        ("/api/v1/session/{session_id}", "delete"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks/{task_id}", "get"),
        ("/health", "get"),
        ("/", "get"),
    } <= routes
    security = schema["components"]["securitySchemes"]
    assert security["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/api/v1/auth/login"
    ours = [
        name
        for name, model in schema["components"]["schemas"].items()
        if not name.startswith(("HTTPValidation", "ValidationError", "Body_"))
    ]
    assert [name for name in ours if "examples" not in schema["components"]["schemas"][name]] == []
    assert "401" in schema["paths"]["/api/v1/query"]["post"]["responses"]


def test_query_stream_sessions_and_tasks(client: TestClient) -> None:
    """The medium contract holds: answer shape, SSE order, session continuity and delete, background tasks."""
    headers = login(client)
    answer = client.post("/api/v1/query", json={"query": "What is 12 * 7?"}, headers=headers).json()
    assert answer["response"] == "12 * 7 = 84."
    assert answer["tokens_used"] > 0
    assert {"provider", "model", "agents", "cached"} <= set(answer["metadata"])
    sid = answer["session_id"]
    events = parse_sse(
        client.post("/api/v1/query/stream", json={"query": "hi", "session_id": sid}, headers=headers).text
    )
    types = [event for event, _ in events]
    assert types[0] == "start" and types[-1] == "done" and types.count("done") == 1
    assert "".join(d["content"] for e, d in events if e == "token") == events[-1][1]["content"]
    assert client.get(f"/api/v1/session/{sid}", headers=headers).json()["message_count"] == 4
    assert client.delete(f"/api/v1/session/{sid}", headers=headers).json() == {"session_id": sid, "deleted": True}
    assert client.get(f"/api/v1/session/{sid}", headers=headers).status_code == 404
    accepted = client.post("/api/v1/tasks", json={"query": "What is 8 / 2?"}, headers=headers)
    assert accepted.status_code == 202
    deadline = time.monotonic() + 15
    while (status := client.get(accepted.json()["status_url"], headers=headers).json())["status"] != "completed":
        assert status["status"] in {"pending", "running"} and time.monotonic() < deadline
        time.sleep(0.05)
    assert status["result"]["response"] == "8 / 2 = 4."


@pytest.mark.parametrize(
    "payload",
    [
        {"query": ""},
        {"query": "\x00 "},
        {"query": "x" * 4001},
        {"query": "a", "session_id": "no/slash"},
        {"query": "a", "max_iterations": 99},
    ],
)
def test_validation_errors_are_422_error_responses(client: TestClient, payload: dict[str, Any]) -> None:
    """Invalid bodies get 422 validation_error with the request id, never a 500."""
    response = client.post("/api/v1/query", json=payload, headers=login(client))
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


def test_timeout_is_504_and_stream_error_event(tmp_path: Path) -> None:
    """A run past AGENT_TIMEOUT_SECONDS: 504 timeout as JSON, a final error event when streaming."""
    settings = make_settings(tmp_path / "t.db", agent_timeout_seconds=0.2, offline_llm_first_token_delay_ms=400)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        response = client.post("/api/v1/query", json={"query": "hi"}, headers=headers)
        assert response.status_code == 504
        assert response.json()["error"] == "timeout"
        events = parse_sse(client.post("/api/v1/query/stream", json={"query": "hi"}, headers=headers).text)
        assert [e for e, _ in events] == ["start", "error"]
        assert events[-1][1]["metadata"]["code"] == "timeout"
        text = client.get("/api/v1/metrics").text
        assert 'agent_executions_total{status="timeout"} 2.0' in text


@pytest.mark.anyio
async def test_fifty_concurrent_uncached_queries_do_not_block_each_other(tmp_path: Path) -> None:
    """50 concurrent different queries with a 200 ms model take about as long as one, not 50 times."""
    settings = make_settings(tmp_path / "c.db", offline_llm_first_token_delay_ms=200, offline_llm_token_delay_ms=0)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with LifespanManager(app), httpx.AsyncClient(transport=transport, base_url="http://t", timeout=60) as client:
        token = (await client.post("/api/v1/auth/login", data={"username": "demo", "password": "demo-password"})).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        started = time.perf_counter()
        await client.post("/api/v1/query", json={"query": "hello 0"}, headers=headers)
        one = time.perf_counter() - started
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(client.post("/api/v1/query", json={"query": f"hello {n}"}, headers=headers) for n in range(1, 51))
        )
        fifty = time.perf_counter() - started
    assert [r.headers["X-Cache"] for r in replies] == ["MISS"] * 50
    assert fifty < one * 6, f"50 concurrent took {fifty:.2f}s; one took {one:.2f}s"


def test_disconnect_stops_the_agent_run(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Closing the connection mid-stream cancels the run within a second; the turn is not saved; and a client
    leaving is no error: nothing is logged at error level."""
    app = create_app(
        make_settings(tmp_path / "d.db", offline_llm_first_token_delay_ms=10, offline_llm_token_delay_ms=100)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            token = client.post("/api/v1/auth/login", data={"username": "demo", "password": "demo-password"}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            service = app.state.agent_service
            body = {"query": "hello", "session_id": "leaver"}
            with client.stream("POST", "/api/v1/query/stream", json=body, headers=headers) as response:
                for line in response.iter_lines():
                    if line.startswith("data: ") and json.loads(line[6:])["type"] == "token":
                        assert service.active_runs == 1
                        break  # closes httpx's line iterator, and with it the connection
            closed = time.monotonic()
            while service.active_runs and time.monotonic() - closed < 1.0:
                time.sleep(0.01)
            assert service.active_runs == 0, "the agent run went on after the client left"
            time.sleep(3)  # left alone, the answer (about 25 tokens at 100 ms) would be saved by now
            assert client.get("/api/v1/session/leaver", headers=headers).status_code == 404
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    logged = capfd.readouterr().out
    assert '"level":"error"' not in logged and "Traceback" not in logged, logged[-3000:]


def test_oversized_bodies_get_413_error_response(tmp_path: Path) -> None:
    """A body over MAX_REQUEST_BYTES is refused with 413, whether it declares its length or streams."""
    with TestClient(create_app(make_settings(tmp_path / "b.db", max_request_bytes=2048))) as client:
        headers = login(client)
        declared = client.post("/api/v1/query", json={"query": "x" * 3000}, headers=headers)

        def chunks() -> Any:
            yield b'{"query": "'
            for _ in range(10):
                yield b"y" * 500

        streamed = client.post(
            "/api/v1/query", content=chunks(), headers={**headers, "Content-Type": "application/json"}
        )
        for response in (declared, streamed):
            assert response.status_code == 413
            assert response.json()["error"] == "payload_too_large"
            assert response.json()["request_id"] == response.headers["X-Request-ID"]
        assert client.post("/api/v1/query", json={"query": "hi"}, headers=headers).status_code == 200


@pytest.mark.service
def test_ids_and_credentials_postgresql_cannot_store_are_4xx(tmp_path: Path) -> None:
    """A NUL byte (which PostgreSQL refuses in text) in a task id, session id or login is a 4xx, not a 500."""
    with postgres_database() as url, TestClient(create_app(make_settings(tmp_path, database_url=url))) as client:
        headers = login(client)
        for path in ("/api/v1/tasks/a%00b", "/api/v1/session/a%00b", "/api/v1/tasks/" + "é" * 64):
            response = client.get(path, headers=headers)
            assert response.status_code in {404, 422}, (path, response.text)
            assert response.json()["error"] in {"not_found", "validation_error"}
        for username, password in [("de\x00mo", "x"), ("demo", "x\x00")]:
            response = client.post("/api/v1/auth/login", data={"username": username, "password": password})
            assert response.status_code == 422, response.text


def test_an_unexpected_error_is_a_bare_500_with_debug_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DEBUG=false: an unhandled exception is a 500 internal_error whose body has no traceback, exception text or
    path, for JSON answers and streams alike; the log keeps the traceback for the operator."""
    secret = "password=hunter2 in /srv/app/secret_module.py"

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(secret)

    async def broken_run(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise RuntimeError(secret)
        yield  # an async generator, like the runner's events

    settings = make_settings(tmp_path / "e.db", debug=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        headers = login(client)
        service = client.app.state.agent_service  # type: ignore[attr-defined]
        monkeypatch.setattr(service, "list_sessions", broken)
        monkeypatch.setattr(service.runner, "events", broken_run)
        responses = [
            client.get("/api/v1/sessions", headers=headers),
            client.post("/api/v1/query", json={"query": "hi"}, headers=headers),
        ]
        stream = client.post("/api/v1/query/stream", json={"query": "hi"}, headers=headers)
    for response in responses:
        assert response.status_code == 500
        assert response.json()["error"] == "internal_error"
    events = parse_sse(stream.text)
    assert events[-1][0] == "error" and events[-1][1]["metadata"]["code"] == "internal_error"
    for text in [*(response.text for response in responses), stream.text]:
        assert "Traceback" not in text and "RuntimeError" not in text and secret not in text and ".py" not in text


def test_cors_allows_only_the_configured_origins_without_credentials(tmp_path: Path) -> None:
    """A preflight from a configured origin is allowed (and sees the request id); any other origin gets no CORS
    grant, and no origin is ever allowed to send cookies or credentials along."""
    settings = make_settings(tmp_path / "c.db", cors_origins="https://app.example")
    with TestClient(create_app(settings)) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        allowed = client.options("/api/v1/query", headers={"Origin": "https://app.example", **preflight})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.options("/api/v1/query", headers={"Origin": "https://evil.example", **preflight})
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in simple.headers
        for response in (allowed, refused, simple):
            assert "access-control-allow-credentials" not in response.headers
        exposed = client.get("/health", headers={"Origin": "https://app.example"}).headers
        assert "X-Request-ID" in exposed["access-control-expose-headers"]
