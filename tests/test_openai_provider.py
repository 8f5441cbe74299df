"""LLM_PROVIDER=openai: the real ChatOpenAI client, in a real uvicorn process, against a local test server."""

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.openai_server import OpenAITestServer, run_openai_test_server
from tests.support.sse import parse_sse
from tests.support.stage import ROOT, StageProcess, run_stage

TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def llm() -> Iterator[OpenAITestServer]:
    with run_openai_test_server(first_token_delay_ms=5, token_delay_ms=1) as server:
        yield server


@pytest.fixture(scope="module")
def stage(llm: OpenAITestServer) -> Iterator[StageProcess]:
    env = {
        "LLM_PROVIDER": "openai",
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "test-key",
        "OPENAI_MODEL": "test-model",
        "OPENAI_MAX_RETRIES": "0",
        "AGENT_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "RATE_LIMIT_REQUESTS": "1000",
    }
    with run_stage(ROOT / "solutions" / "medium", env) as process:
        yield process


@pytest.fixture
def client(stage: StageProcess, llm: OpenAITestServer) -> Iterator[httpx.Client]:
    llm.reset()
    with httpx.Client(base_url=stage.url, timeout=30) as http:
        yield http


def test_query_runs_the_whole_graph_through_chat_openai(client: httpx.Client, llm: OpenAITestServer) -> None:
    """The supervisor's forced route, the researcher's tool call and the writer all go through the real client."""
    body = client.post("/api/v1/query", json={"query": "What is 12 * 7?"}).json()
    assert body["response"] == "Based on the research: - calculator(12 * 7): 84"
    assert body["metadata"]["provider"] == "openai"
    assert body["metadata"]["model"] == "test-model"
    assert body["metadata"]["tools_used"] == ["calculator"]
    assert body["tokens_used"] > 0
    assert llm.requests[0].get("tool_choice") == {"type": "function", "function": {"name": "route"}}
    assert all(r["_authorization"] == "Bearer test-key" for r in llm.requests)


def test_stream_keeps_token_usage_from_a_custom_base_url(client: httpx.Client, llm: OpenAITestServer) -> None:
    """Streaming asks for the usage chunk (stream_usage=True), so tokens_used is counted when streaming."""
    events = parse_sse(client.post("/api/v1/query/stream", json={"query": "hello there"}).text)
    assert events[0][0] == "start"
    assert events[-1][0] == "done"
    tokens = [data["content"] for event, data in events if event == "token"]
    assert len(tokens) > 1
    assert "".join(tokens) == events[-1][1]["content"] == "You said: hello there"
    assert events[-1][1]["metadata"]["tokens_used"] > 0
    streamed = [r for r in llm.requests if r.get("stream")]
    assert streamed
    assert all(r.get("stream_options") == {"include_usage": True} for r in streamed)


@pytest.mark.parametrize("mode", ["error", "unauthorized", "garbage"])
def test_provider_failure_is_502_upstream_error(client: httpx.Client, llm: OpenAITestServer, mode: str) -> None:
    """A provider that errors, refuses the key or answers garbage gives 502 upstream_error, not a 500."""
    llm.mode = mode
    response = client.post("/api/v1/query", json={"query": "hello"})
    assert response.status_code == 502, response.text
    assert response.json()["error"] == "upstream_error"
    events = parse_sse(client.post("/api/v1/query/stream", json={"query": "hello"}).text)
    assert [event for event, _ in events] == ["start", "error"]
    assert events[-1][1]["metadata"]["code"] == "upstream_error"


def test_hanging_provider_is_504_within_the_timeout(client: httpx.Client, llm: OpenAITestServer) -> None:
    """A provider that never answers gives 504 timeout soon after AGENT_TIMEOUT_SECONDS."""
    llm.mode = "hang"
    started = time.monotonic()
    response = client.post("/api/v1/query", json={"query": "hello"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"] == "timeout"
    assert TIMEOUT_SECONDS - 0.2 < elapsed < TIMEOUT_SECONDS + 5


def test_failed_turn_leaves_the_session_whole(client: httpx.Client, llm: OpenAITestServer) -> None:
    """After a failed turn the session holds only whole turns, and the next turn works."""
    sid = client.post("/api/v1/query", json={"query": "hello"}).json()["session_id"]
    llm.mode = "error"
    assert client.post("/api/v1/query", json={"query": "again", "session_id": sid}).status_code == 502
    llm.mode = "ok"
    assert client.post("/api/v1/query", json={"query": "third", "session_id": sid}).status_code == 200
    messages = client.get(f"/api/v1/session/{sid}").json()["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "third"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
