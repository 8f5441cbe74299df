"""The medium solution as a real uvicorn process: what a student, the grader and the demo see."""

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.support.sse import parse_sse
from tests.support.stage import run_stage, stop

FAST = {"OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "5", "OFFLINE_LLM_TOKEN_DELAY_MS": "1", "RATE_LIMIT_REQUESTS": "1000"}


def test_serves_query_stream_sessions_and_stops_cleanly(medium_solution: Path) -> None:
    """The process answers the contract's main calls and shuts down cleanly on SIGTERM."""
    with run_stage(medium_solution, FAST) as stage:
        client = httpx.Client(base_url=stage.url, timeout=30)
        assert client.get("/health").json()["status"] == "healthy"
        answer = client.post("/api/v1/query", json={"query": "What is 12 * 7?"}).json()
        assert answer["response"] == "12 * 7 = 84."
        sid = answer["session_id"]
        events = parse_sse(client.post("/api/v1/query/stream", json={"query": "hi", "session_id": sid}).text)
        assert events[0][0] == "start"
        assert events[-1][0] == "done"
        assert client.get(f"/api/v1/session/{sid}").json()["message_count"] == 4
        assert client.get("/api/v1/sessions").json()["count"] == 1
        assert client.get("/docs").status_code == 200
        client.close()
        # uvicorn re-raises the signal once its graceful shutdown is done, so -SIGTERM is a clean exit too.
        assert stop(stage.process) in {0, -signal.SIGTERM}
        log = stage.log()
    assert "Application shutdown complete" in log
    assert "Traceback" not in log


@pytest.mark.anyio
async def test_fifty_concurrent_queries_take_about_as_long_as_one(medium_solution: Path) -> None:
    """With a 200 ms model, 50 concurrent queries finish far sooner than 50 sequential ones would."""
    slow = {**FAST, "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "200", "OFFLINE_LLM_TOKEN_DELAY_MS": "0"}
    with run_stage(medium_solution, slow) as stage:
        async with httpx.AsyncClient(base_url=stage.url, timeout=60) as client:
            started = time.perf_counter()
            assert (await client.post("/api/v1/query", json={"query": "hello"})).status_code == 200
            one = time.perf_counter() - started
            started = time.perf_counter()
            replies = await asyncio.gather(*(client.post("/api/v1/query", json={"query": "hello"}) for _ in range(50)))
            fifty = time.perf_counter() - started
    assert all(reply.status_code == 200 for reply in replies)
    # A generous bound that only a serialising (blocking) implementation breaks: that one takes ~50x.
    assert fifty < one * 6, f"50 concurrent: {fifty:.2f}s; one: {one:.2f}s"
