"""Streaming over a real socket: tokens arrive as they are made, and a disconnect stops the run."""

import json
import time

import httpx
import pytest

from app.main import create_app

from .conftest import ThreadedServer, make_settings


def test_tokens_arrive_incrementally_over_a_real_connection() -> None:
    """The first token reaches the client long before the done event (the stream is not buffered)."""
    app = create_app(make_settings(offline_llm_first_token_delay_ms=20, offline_llm_token_delay_ms=40))
    with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        started = time.perf_counter()
        arrivals: dict[str, float] = {}
        with client.stream("POST", "/api/v1/query/stream", json={"query": "hello"}) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    arrivals.setdefault(line.removeprefix("event: "), time.perf_counter() - started)
        # About 25 tokens at 40 ms each come between the first token and the end.
        assert arrivals["done"] - arrivals["token"] > 0.5


def test_disconnect_stops_the_agent_run(capfd: pytest.CaptureFixture[str]) -> None:
    """Closing the connection mid-stream cancels the run within a second, and the turn is not saved; a client
    leaving is no error: nothing is logged at error level."""
    app = create_app(make_settings(offline_llm_first_token_delay_ms=10, offline_llm_token_delay_ms=100))
    with ThreadedServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        service = app.state.agent_service
        with client.stream("POST", "/api/v1/query/stream", json={"query": "hello", "session_id": "leaver"}) as response:
            for line in response.iter_lines():
                if line.startswith("data: ") and json.loads(line[6:])["type"] == "token":
                    assert service.active_runs == 1
                    # Leaving the loop closes httpx's line iterator, and with it the connection.
                    break
        closed = time.monotonic()
        while service.active_runs and time.monotonic() - closed < 1.0:
            time.sleep(0.01)
        assert service.active_runs == 0, "the agent run went on after the client left"
        # Left alone, the answer (about 25 tokens at 100 ms) would be saved within 3 s.
        time.sleep(3)
        assert client.get("/api/v1/session/leaver").status_code == 404
        assert client.get("/health").status_code == 200
    logged = capfd.readouterr()
    assert "ERROR" not in logged.err + logged.out and "Traceback" not in logged.err + logged.out, logged.err[-3000:]
