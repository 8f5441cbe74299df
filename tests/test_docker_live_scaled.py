"""The scaled compose demo for real: three api replicas behind the proxy (`nox -s docker_live` prepares the engine).

The stack is brought up by docker/README.md's own scaling command, as written, in a shell without SECRET_KEY
(the command makes one), with free ports and the limit lowered to 20 a minute (RATE_LIMIT_REQUESTS: the compose
file reads them) so that a burst is short; `ps` and `down -v` then run in shells without SECRET_KEY too.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

if os.environ.get("DOCKER_LIVE") != "1":
    pytest.skip("the live Docker tests run in `nox -s docker_live`, which prepares the engine", allow_module_level=True)

from tests.support.docker_live import (
    ALICE,
    DEMO,
    ROOT,
    Stack,
    engine,
    guide_blocks,
    healthy_api,
    image,
    login,
    logs_on_failure,
    prometheus_targets,
    stack_env,
    stream_events,
)

__all__ = ["engine", "image"]  # the fixtures this module uses
# A stack comes up, is exercised and goes down within one test or fixture: far past the suite's default.
pytestmark = pytest.mark.timeout(900)
LIMIT = 20
REPLICAS = 3


@pytest.fixture(scope="module")
def scaled(image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    (command,) = guide_blocks("Scaling the api")
    assert f"--scale api={REPLICAS}" in command, f"the guide's scaling command changed: {command}"
    env = {key: value for key, value in stack_env(RATE_LIMIT_REQUESTS=str(LIMIT)).items() if key != "SECRET_KEY"}
    ports = {name: f"http://127.0.0.1:{env[name]}" for name in ("API_PORT", "PROMETHEUS_PORT", "JAEGER_PORT")}
    files = ("docker-compose.yml", "docker-compose.scale.yml")
    running = Stack(files, env, ports["API_PORT"], ports["PROMETHEUS_PORT"], ports["JAEGER_PORT"])
    log = tmp_path_factory.mktemp("scaled") / "up.log"
    with log.open("wb") as out:
        process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        with logs_on_failure(running):
            healthy_api(running, REPLICAS)
        yield running
    finally:
        running.compose("down", "-v", "--remove-orphans", timeout=180)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def test_every_replica_is_scraped(scaled: Stack) -> None:
    """Prometheus has one agent-api target per replica, each up."""
    with logs_on_failure(scaled):
        targets = prometheus_targets(scaled, "agent-api", REPLICAS)
        assert len(targets) == REPLICAS and all(t["health"] == "up" for t in targets), f"targets: {targets}"


def test_the_rate_limit_is_exact_across_replicas(scaled: Stack) -> None:
    """A burst of LIMIT + 5 requests through the proxy admits exactly LIMIT, whichever replicas answer."""
    with logs_on_failure(scaled), httpx.Client(base_url=scaled.api, timeout=30) as client:
        headers = login(client, DEMO)
        codes = [client.get("/api/v1/sessions", headers=headers).status_code for _ in range(LIMIT + 5)]
        assert (codes.count(200), codes.count(429)) == (LIMIT, 5), f"the burst's statuses: {codes}"


def test_a_conversation_continues_whichever_replica_answers(scaled: Stack) -> None:
    """Six turns of one session, on new connections spread over the replicas, all land in that session."""
    with logs_on_failure(scaled):
        with httpx.Client(base_url=scaled.api, timeout=60) as client:
            headers = login(client, ALICE)
        session_id, marker = None, uuid.uuid4().hex[:8]
        for turn in range(6):
            # A new connection per turn: the proxy's round robin sends them to different replicas.
            with httpx.Client(base_url=scaled.api, timeout=60) as client:
                body = {"query": f"Turn {turn} of {marker}: what is {turn} + 1?", "session_id": session_id}
                reply = client.post("/api/v1/query", json={k: v for k, v in body.items() if v}, headers=headers)
                assert reply.status_code == 200, f"turn {turn}: {reply.status_code} {reply.text[:300]}"
                session_id = reply.json()["session_id"]
        with httpx.Client(base_url=scaled.api, timeout=60) as client:
            history = client.get(f"/api/v1/session/{session_id}", headers=headers).json()
        text = str(history)
        missing = [turn for turn in range(6) if f"Turn {turn} of {marker}" not in text]
        assert not missing, f"turns missing from the session after spreading over replicas: {missing}"
        served = set(re.findall(r"^(api-\d+)\s*\|.*/api/v1/query", scaled.compose("logs", "--no-color", "api"), re.M))
        assert len(served) >= 2, f"the turns all went to one replica ({served}): the proxy did not spread them"


def test_a_stream_through_the_proxy_is_not_buffered(scaled: Stack) -> None:
    """Through nginx, a stream's first token arrives well before its done event."""
    with logs_on_failure(scaled), httpx.Client(base_url=scaled.api, timeout=60) as client:
        events = stream_events(client, login(client, ALICE), "What is SSE?")
        tokens = [at for name, at in events if name == "token"]
        done = [at for name, at in events if name == "done"]
        assert tokens and done, f"the stream's events: {[name for name, _ in events]}"
        assert done[0] - tokens[0] >= 0.2 and tokens[0] < 0.7 * done[0], (
            f"first token at {tokens[0]:.2f} s, done at {done[0]:.2f} s: the proxy held the stream back"
        )
