"""The HTTP API, in process: every contract item of the medium lab that a test client can see."""

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.models import MAX_QUERY_LENGTH
from tests.support.sse import parse_sse

from .conftest import make_settings

QUERY = "/api/v1/query"


def _assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "detail", "request_id"}
    assert body["error"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in body["detail"]
    return body


def test_root_points_to_docs_and_health(client: TestClient) -> None:
    """GET / names the service and links the docs and the health check."""
    assert client.get("/").json() == {
        "name": "Agent API (medium lab)",
        "version": "1.0.0",
        "docs_url": "/docs",
        "health_url": "/health",
    }


def test_health_reports_status_version_uptime_and_llm(client: TestClient) -> None:
    """GET /health is healthy, with uptime and the LLM dependency."""
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["uptime_seconds"] >= 0
    assert body["dependencies"]["llm"]["status"] == "up"


def test_query_answers_with_the_contract_shape(client: TestClient) -> None:
    """POST /query returns response, session_id, execution_time, tokens_used and metadata."""
    body = client.post(QUERY, json={"query": "What is 12 * 7?"}).json()
    assert body["response"] == "12 * 7 = 84."
    assert body["tokens_used"] > 0 and body["execution_time"] > 0
    assert {"provider", "model", "agents"} <= set(body["metadata"])
    assert len(body["session_id"]) >= 1


def test_session_continues_lists_and_deletes(client: TestClient) -> None:
    """A session remembers earlier turns, is listed, shows its messages, and is gone after DELETE."""
    first = client.post(QUERY, json={"query": "my name is Grace"}).json()
    sid = first["session_id"]
    second = client.post(QUERY, json={"query": "what is my name?", "session_id": sid}).json()
    assert second["response"] == "Your name is Grace."
    info = client.get(f"/api/v1/session/{sid}").json()
    assert info["message_count"] == 4
    assert [m["role"] for m in info["messages"]] == ["user", "assistant", "user", "assistant"]
    listing = client.get("/api/v1/sessions").json()
    assert listing["count"] == 1 and listing["sessions"][0]["session_id"] == sid
    assert "messages" not in listing["sessions"][0]
    assert client.delete(f"/api/v1/session/{sid}").json() == {"session_id": sid, "deleted": True}
    _assert_error(client.get(f"/api/v1/session/{sid}"), 404, "not_found")
    _assert_error(client.delete(f"/api/v1/session/{sid}"), 404, "not_found")


def test_client_chosen_session_id_starts_a_session(client: TestClient) -> None:
    """An unknown but valid session_id starts a session with that id."""
    assert client.post(QUERY, json={"query": "hi", "session_id": "my-session_1"}).json()["session_id"] == "my-session_1"
    assert client.get("/api/v1/session/my-session_1").status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"query": ""},
        {"query": "   \n\t "},
        {"query": "\x00\x01\x02"},
        {"query": "x" * (MAX_QUERY_LENGTH + 1)},
        {"query": "hi", "session_id": "has space"},
        {"query": "hi", "session_id": "x" * 65},
        {"query": "hi", "max_iterations": 0},
        {"query": "hi", "max_iterations": 21},
        {"query": 42},
        {},
    ],
)
def test_invalid_queries_get_422_error_response(client: TestClient, payload: dict[str, Any]) -> None:
    """Bad input is refused with 422 validation_error, never a 500."""
    _assert_error(client.post(QUERY, json=payload), 422, "validation_error")


def test_malformed_json_gets_422(client: TestClient) -> None:
    """A body that is not JSON is a validation error."""
    response = client.post(QUERY, content=b"{not json", headers={"Content-Type": "application/json"})
    _assert_error(response, 422, "validation_error")


def test_query_is_stripped_and_control_characters_removed(client: TestClient) -> None:
    """Whitespace around the query and control characters are removed; newlines and tabs stay."""
    sid = client.post(QUERY, json={"query": "  hel\x07lo\tthere\n  "}).json()["session_id"]
    messages = client.get(f"/api/v1/session/{sid}").json()["messages"]
    assert messages[0]["content"] == "hello\tthere"


def test_unknown_route_and_wrong_method_are_error_responses(client: TestClient) -> None:
    """404 and 405 from routing are ErrorResponse bodies too."""
    _assert_error(client.get("/api/v1/nothing"), 404, "not_found")
    _assert_error(client.get(QUERY), 405, "method_not_allowed")


def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    """A sane X-Request-ID is echoed; a missing or unsafe one is replaced by a fresh id."""
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health").headers["X-Request-ID"]
    assert len(generated) == 32
    unsafe = client.get("/health", headers={"X-Request-ID": "bad id\twith<tags>"}).headers["X-Request-ID"]
    assert unsafe != "bad id\twith<tags>" and len(unsafe) == 32


def test_stream_endpoint_sends_the_contract_events(client: TestClient) -> None:
    """POST /query/stream: start first, tokens, steps, one done last whose content is the joined tokens."""
    with client.stream("POST", f"{QUERY}/stream", json={"query": "What is 3 * 3?"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    types = [event for event, _ in events]
    assert types[0] == "start" and types[-1] == "done"
    assert types.count("done") + types.count("error") == 1
    assert all(event == data["type"] for event, data in events)
    tokens = "".join(data["content"] for event, data in events if event == "token")
    done = events[-1][1]
    assert tokens == done["content"] == "3 * 3 = 9."
    assert [data["content"] for event, data in events if event == "step"] == [
        "supervisor",
        "researcher",
        "tools",
        "researcher",
        "writer",
    ]
    assert done["metadata"]["tokens_used"] > 0 and done["metadata"]["execution_time"] > 0
    assert len({data["session_id"] for _, data in events}) == 1


def test_query_with_stream_true_is_the_same_stream(client: TestClient) -> None:
    """POST /query with stream=true answers with the same SSE events."""
    response = client.post(QUERY, json={"query": "hello", "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[0][0] == "start" and events[-1][0] == "done"
    assert "".join(d["content"] for e, d in events if e == "token") == events[-1][1]["content"]


def test_stream_error_is_the_last_event() -> None:
    """A run that times out mid-stream ends with one error event with code timeout."""
    settings = make_settings(agent_timeout_seconds=0.2, offline_llm_first_token_delay_ms=400)
    with TestClient(create_app(settings)) as client:
        events = parse_sse(client.post(f"{QUERY}/stream", json={"query": "hello"}).text)
        assert [e for e, _ in events] == ["start", "error"]
        assert events[-1][1]["metadata"]["code"] == "timeout"
        _assert_error(client.post(QUERY, json={"query": "hello"}), 504, "timeout")


def test_background_task_completes_and_can_be_polled(client: TestClient) -> None:
    """POST /tasks answers 202 at once; polling the status_url ends with the completed answer."""
    accepted = client.post("/api/v1/tasks", json={"query": "What is 9 - 4?"})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "pending" and body["status_url"] == f"/api/v1/tasks/{body['task_id']}"
    deadline = time.monotonic() + 10
    while (status := client.get(body["status_url"]).json())["status"] in {"pending", "running"}:
        assert time.monotonic() < deadline, "task did not finish"
        time.sleep(0.02)
    assert status["status"] == "completed"
    assert status["result"]["response"] == "9 - 4 = 5."
    _assert_error(client.get("/api/v1/tasks/unknown"), 404, "not_found")


def test_failed_background_task_reports_its_error() -> None:
    """A task whose run fails is marked failed with the error code, not lost."""
    with TestClient(
        create_app(make_settings(agent_timeout_seconds=0.1, offline_llm_first_token_delay_ms=300))
    ) as client:
        url = client.post("/api/v1/tasks", json={"query": "hi"}).json()["status_url"]
        deadline = time.monotonic() + 10
        while (status := client.get(url).json())["status"] in {"pending", "running"}:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert status["status"] == "failed" and status["error"].startswith("timeout")


def test_rate_limit_admits_the_limit_then_429_with_headers() -> None:
    """With a limit of 3, three requests pass with headers, the fourth gets 429 with Retry-After."""
    with TestClient(create_app(make_settings(rate_limit_requests=3, rate_limit_window=60))) as client:
        remaining = [client.get("/api/v1/sessions").headers["X-RateLimit-Remaining"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        limited = client.get("/api/v1/sessions")
        _assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.headers["X-RateLimit-Limit"] == "3"
        # Health, docs and the root are never limited.
        assert all(client.get(path).status_code == 200 for path in ("/health", "/", "/openapi.json", "/docs"))


def test_openapi_documents_every_endpoint_and_model_with_examples(client: TestClient) -> None:
    """Every contract endpoint is in the schema, and every model there has an example."""
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/", "get"),
        ("/health", "get"),
        ("/api/v1/query", "post"),
        ("/api/v1/query/stream", "post"),
        ("/api/v1/session/{session_id}", "get"),
        ("/api/v1/session/{session_id}", "delete"),
        ("/api/v1/sessions", "get"),
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks/{task_id}", "get"),
    }
    assert expected <= {(path, method) for path, methods in paths.items() for method in methods}
    for path, method in expected:
        assert paths[path][method].get("description") or paths[path][method].get("summary")
    models = schema["components"]["schemas"]
    ours = [name for name in models if not name.startswith(("HTTPValidationError", "ValidationError"))]
    missing = [name for name in ours if "examples" not in models[name]]
    assert missing == []
    assert "404" in paths["/api/v1/session/{session_id}"]["get"]["responses"]
    assert "422" in paths["/api/v1/query"]["post"]["responses"]


def test_cors_allows_configured_origins() -> None:
    """A preflight from a configured origin is allowed and exposes the request id header."""
    with TestClient(create_app(make_settings(cors_origins="http://example.test"))) as client:
        response = client.options(
            QUERY, headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
        )
        assert response.headers["access-control-allow-origin"] == "http://example.test"
        got = client.get("/health", headers={"Origin": "http://example.test"})
        assert "X-Request-ID" in got.headers["access-control-expose-headers"]
