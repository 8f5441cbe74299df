"""Prometheus metrics: the contract's names and types, route-template labels, counters that move,
a clean `promtool check metrics`, and sums that stay right with several uvicorn workers."""

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from tests.support.services import unavailable
from tests.support.stage import free_port, stop

from .conftest import login, metric_value

STAGE = Path(__file__).resolve().parents[1]
EXPECTED_TYPES = {
    "http_requests_total": "counter",
    "http_request_duration_seconds": "histogram",
    "active_sessions": "gauge",
    "agent_executions_total": "counter",
    "agent_execution_duration_seconds": "histogram",
    "cache_hits_total": "counter",
    "cache_misses_total": "counter",
}


def _types(text: str) -> dict[str, str]:
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
    return types


def test_names_types_and_route_template_labels(client: TestClient) -> None:
    """Every contract metric is exposed with its type; `endpoint` is the route template, never the raw path."""
    headers = login(client)
    sid = client.post("/api/v1/query", json={"query": "What is 2 * 21?"}, headers=headers).json()["session_id"]
    client.get(f"/api/v1/session/{sid}", headers=headers)
    client.get("/api/v1/session/does-not-exist", headers=headers)
    client.get("/no/such/path")
    text = client.get("/api/v1/metrics").text
    types = _types(text)
    assert {name: types.get(name) for name in EXPECTED_TYPES} == EXPECTED_TYPES
    template = {"method": "GET", "endpoint": "/api/v1/session/{session_id}"}
    assert metric_value(text, "http_requests_total", status="200", **template) == 1
    assert metric_value(text, "http_requests_total", status="404", **template) == 1
    assert metric_value(text, "http_requests_total", method="GET", endpoint="unmatched", status="404") == 1
    assert sid not in text
    assert metric_value(text, "agent_executions_total", status="success") == 1
    assert metric_value(text, "agent_execution_duration_seconds_count") == 1
    assert metric_value(text, "active_sessions") == 1
    assert metric_value(text, "http_request_duration_seconds_count", method="POST", endpoint="/api/v1/query") == 1


def test_deleting_a_session_updates_active_sessions(client: TestClient, database: Path) -> None:
    """active_sessions follows creation (a cache hit's new session counts at once) and deletion."""
    headers = login(client)
    sids = [client.post("/api/v1/query", json={"query": "hi"}, headers=headers).json()["session_id"] for _ in range(3)]
    assert metric_value(client.get("/api/v1/metrics").text, "active_sessions") == 3
    # While a hit's first turn is being written behind, a recount can see it twice for a moment: let it land.
    deadline = time.monotonic() + 10
    while _session_rows(database) < 3:
        assert time.monotonic() < deadline, "the hits' sessions were not written behind"
        time.sleep(0.05)
    client.delete(f"/api/v1/session/{sids[0]}", headers=headers)
    assert metric_value(client.get("/api/v1/metrics").text, "active_sessions") == 2


def _session_rows(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM sessions").fetchone()[0])


def test_promtool_finds_nothing(client: TestClient, tmp_path: Path) -> None:
    """`promtool check metrics` accepts the exposition without a single lint message."""
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (Debian package prometheus)")
    headers = login(client)
    client.post("/api/v1/query", json={"query": "What is 1 + 2?"}, headers=headers)
    text = client.get("/api/v1/metrics").text
    result = subprocess.run(
        [str(promtool), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == result.stderr.strip() == ""


def test_counts_add_up_across_workers(tmp_path: Path) -> None:
    """With `python -m app.serve` and two workers, a scrape reports every worker's requests."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WORKERS": "2",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
        "RATE_LIMIT_ENABLED": "false",
        "BCRYPT_ROUNDS": "4",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen([sys.executable, "-m", "app.serve"], cwd=STAGE, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            _still_starting(process, deadline, "the service did not start")
            time.sleep(0.1)
        # Each worker sets active_sessions as it starts: wait until both have.
        while len(list((tmp_path / "prom").glob("gauge_*.db"))) < 2:
            _still_starting(process, deadline, "the second worker did not start")
            time.sleep(0.1)
        # Which worker accepts a connection is up to the kernel, and a busy machine can favour one for a while:
        # send batches until both have served some (each worker keeps its own file), at most 10 of them.
        sent, served = 0, []
        while len(served) < 2 and sent < 400:
            text = asyncio.run(_hit_concurrently(url, 40))
            sent += 40
            served = [path.name for path in (tmp_path / "prom").glob("counter_*.db") if b'"/"' in path.read_bytes()]
    finally:
        stop(process)
    assert len(served) == 2, f"not every worker served requests after {sent}: {served}"
    # The scrape added both workers' counts up.
    assert metric_value(text, "http_requests_total", method="GET", endpoint="/", status="200") == sent


def _still_starting(process: subprocess.Popen[bytes], deadline: float, failure: str) -> None:
    status = process.poll()
    # uvicorn's parent stops, with status 0, when a worker fails during its start-up: its log says why.
    assert status is None, f"{failure}: the service exited with status {status} (see its log above)"
    assert time.monotonic() < deadline, f"{failure} within 60 s"


async def _hit_concurrently(url: str, count: int) -> str:
    """Send `count` requests at once on separate connections (so both workers get some); return a scrape."""
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        replies = await asyncio.gather(*(client.get("/") for _ in range(count)))
        assert [reply.status_code for reply in replies] == [200] * count
        return (await client.get("/api/v1/metrics")).text
