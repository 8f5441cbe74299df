"""Helpers of the live Docker tests: docker and compose commands, containers and stacks, logs on failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.services import unavailable
from tests.support.stage import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
CONTEXT = ROOT / "solutions" / "advanced"
IMAGE = "agent-deploy-labs-api"  # the name compose gives the api's build, so that compose reuses it
LABEL = "org.agent-deploy-labs.live"
PROJECT = "agent-deploy-labs"  # the compose file's own name
DEMO = {"username": "demo", "password": "demo-password"}
ALICE = {"username": "alice", "password": "alice-password"}


def docker(*args: str, timeout: float = 120, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run docker; its stdout, or an AssertionError with what it said."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    assert done.returncode == 0, f"docker {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="session", autouse=True)
def engine() -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        unavailable("no Docker engine answers: `nox -s docker_live` installs and starts one (as root)")


@pytest.fixture(scope="session")
def image(engine: None) -> str:
    """The advanced solution's image, built from its own Dockerfile and folder."""
    docker("build", "-q", "-t", IMAGE, str(CONTEXT), timeout=1500, env={**os.environ, "DOCKER_BUILDKIT": "1"})
    return IMAGE


# --- The image alone ---------------------------------------------------------------------------------------


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", "--tail", "60", self.name], capture_output=True, text=True)
        return f"--- docker logs {self.name} (last 60 lines) ---\n{done.stdout}{done.stderr}"


@contextmanager
def logs_on_failure(*describe: object) -> Iterator[None]:
    """Re-raise an assertion with the logs of the containers (or compose stacks) given."""
    try:
        yield
    except AssertionError as error:
        logs = "\n".join(item.logs() for item in describe)  # type: ignore[attr-defined]
        raise AssertionError(f"{error}\n{logs}") from error


def start(image: str, *options: str) -> Container:
    name = f"agent-live-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--label", LABEL, "-p", "127.0.0.1::8000", *options, image)
    address = docker("port", name, "8000/tcp").split()[0]
    return Container(name, f"http://{address}")


def remove(container: Container) -> None:
    subprocess.run(["docker", "rm", "-f", container.name], capture_output=True)


def wait_for_health(url: str, timeout: float, container: Container | None = None) -> float:
    """Seconds until /health answers 200; fails after `timeout` or when the container has exited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if container is not None and docker("inspect", "-f", "{{.State.Running}}", container.name).strip() != "true":
            raise AssertionError(f"the container exited before /health answered 200 at {url}")
        time.sleep(0.05)
    raise AssertionError(f"/health did not answer 200 within {timeout:.0f} s at {url}")


def login(client: httpx.Client, user: dict[str, str] = DEMO) -> dict[str, str]:
    response = client.post("/api/v1/auth/login", data=user)
    assert response.status_code == 200, f"login as {user['username']}: {response.status_code} {response.text[:300]}"
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# --- The compose demo --------------------------------------------------------------------------------------


@dataclass
class Stack:
    files: tuple[str, ...]
    env: dict[str, str]
    api: str
    prometheus: str
    jaeger: str

    def compose(self, *args: str, timeout: float = 300) -> str:
        options = [item for file in self.files for item in ("-f", file)]
        return docker("compose", *options, *args, timeout=timeout, env=self.env, cwd=DOCKER_DIR)

    def logs(self) -> str:
        options = [item for file in self.files for item in ("-f", file)]
        done = subprocess.run(
            ["docker", "compose", *options, "logs", "--no-color", "--tail", "40"],
            capture_output=True, text=True, env=self.env, cwd=DOCKER_DIR,
        )  # fmt: skip
        return f"--- docker compose logs (last 40 lines each) ---\n{done.stdout[-12000:]}{done.stderr[-2000:]}"


def stack_env(**extra: str) -> dict[str, str]:
    ports = {name: str(free_port()) for name in ("API_PORT", "PROMETHEUS_PORT", "GRAFANA_PORT", "JAEGER_PORT")}
    return {**os.environ, "SECRET_KEY": uuid.uuid4().hex * 2, **ports, **extra}


@contextmanager
def stack(*files: str, up: tuple[str, ...] = (), **extra: str) -> Iterator[Stack]:
    env = stack_env(**extra)
    running = Stack(
        files, env, f"http://127.0.0.1:{env['API_PORT']}", f"http://127.0.0.1:{env['PROMETHEUS_PORT']}",
        f"http://127.0.0.1:{env['JAEGER_PORT']}",
    )  # fmt: skip
    try:
        with logs_on_failure(running):
            running.compose("up", "-d", "--wait", *up, timeout=600)
        yield running
    finally:
        running.compose("down", "-v", "--remove-orphans", timeout=180)


def stream_events(client: httpx.Client, headers: dict[str, str], query: str) -> list[tuple[str, float]]:
    """Each event's name and the seconds since the request, in order."""
    events, started, name = [], time.monotonic(), "message"
    body = {"query": query}
    with client.stream("POST", "/api/v1/query/stream", json=body, headers=headers) as response:
        assert response.status_code == 200, f"the stream answered {response.status_code}"
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                events.append((name, time.monotonic() - started))
                name = "message"
    return events


def prometheus_query(stack: Stack, query: str) -> list[dict[str, object]]:
    reply = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query}, timeout=10).json()
    assert reply["status"] == "success", f"Prometheus refused {query}: {reply}"
    return reply["data"]["result"]  # type: ignore[no-any-return]


def prometheus_targets(stack: Stack, job: str, count: int, timeout: float = 90) -> list[dict[str, object]]:
    """The job's active targets, once `count` of them are up (or as they are after `timeout`)."""
    deadline, targets = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        reply = httpx.get(f"{stack.prometheus}/api/v1/targets", timeout=10).json()
        targets = [t for t in reply["data"]["activeTargets"] if t["labels"]["job"] == job]
        if len([t for t in targets if t["health"] == "up"]) >= count:
            break
        time.sleep(2)
    return targets


def guide_blocks(heading: str) -> list[str]:
    """The bash blocks of docker/README.md's section `## heading`, continuation lines joined."""
    section = (DOCKER_DIR / "README.md").read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def healthy_api(stack: Stack, replicas: int, timeout: float = 300) -> None:
    """`docker compose ps` until that many api containers are healthy."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        rows = [json.loads(line) for line in stack.compose("ps", "--format", "json", "api").splitlines() if line]
        states = [row.get("Health") for row in rows]
        if states.count("healthy") >= replicas:
            return
        time.sleep(3)
    raise AssertionError(f"`docker compose ps` showed api {states} for {timeout:.0f} s, not {replicas} healthy")
