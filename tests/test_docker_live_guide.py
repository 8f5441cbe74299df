"""docker/README.md's commands as written, each in a new shell without SECRET_KEY unless the guide sets one.

The scaling command brings up the stack of tests/test_docker_live_scaled.py.

The guide publishes the default ports (8000, 9090, 3000, 16686 on 127.0.0.1), so these need them free.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if os.environ.get("DOCKER_LIVE") != "1":
    pytest.skip("the live Docker tests run in `nox -s docker_live`, which prepares the engine", allow_module_level=True)

from tests.support.docker_live import DOCKER_DIR, ROOT, engine, image
from tests.support.services import unavailable

__all__ = ["engine", "image"]  # the fixtures this module uses
# A stack comes up, is exercised and goes down within one test or fixture: far past the suite's default.
pytestmark = pytest.mark.timeout(900)
GUIDE = DOCKER_DIR / "README.md"
PORTS = (8000, 9090, 3000, 16686)
SCALED = ("-f", "docker-compose.yml", "-f", "docker-compose.scale.yml")


def blocks(heading: str) -> list[str]:
    """The bash blocks of the guide's section `## heading`, continuation lines joined."""
    section = GUIDE.read_text().split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def new_shell() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "SECRET_KEY"}


def shell(command: str, cwd: Path = DOCKER_DIR, timeout: float = 120) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command],
        capture_output=True, text=True, cwd=cwd, env=new_shell(), timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"`{command}` in a new shell exited {done.returncode}:\n{done.stderr[-2000:]}"
    return done.stdout


def wait_healthy(*files: str, replicas: int = 1, timeout: float = 300) -> None:
    """`docker compose ps`, in a new shell, until that many api containers are healthy."""
    deadline, states = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        out = shell(f"docker compose {' '.join(files)} ps --format json api")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        states = [row.get("Health") for row in rows]
        if states.count("healthy") >= replicas:
            return
        time.sleep(3)
    raise AssertionError(f"`docker compose ps` showed api {states} for {timeout:.0f} s, not {replicas} healthy")


@pytest.fixture
def ports_free() -> Iterator[None]:
    for port in PORTS:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                unavailable(f"127.0.0.1:{port} is taken, and the guide's stack publishes it")
    yield
    for files in ((), SCALED):
        subprocess.run(
            ["docker", "compose", *files, "down", "-v"], capture_output=True, cwd=DOCKER_DIR, env=new_shell()
        )


def bring_up(command: str, log: Path) -> subprocess.Popen[bytes]:
    """The guide's foreground `up`, run as written from the repository root."""
    with log.open("wb") as out:
        return subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=new_shell(), stdout=out, stderr=out)


def test_the_guide_brings_the_stack_up_tries_it_and_takes_it_down(image: str, ports_free: None, tmp_path: Path) -> None:
    """Bring it up, Try it, then ps, logs and down in new shells, exactly as docker/README.md says."""
    (up,) = blocks("Bring it up")
    assert 'SECRET_KEY="$(openssl rand -hex 32)"' in up, f"the guide's up command changed: {up}"
    process = bring_up(up, tmp_path / "up.log")
    try:
        wait_healthy()
        tried = shell(blocks("Try it")[0], timeout=180)
        assert '"status":"healthy"' in tried.replace(" ", "") and "http_requests_total" in tried, tried[-2000:]
        assert "84" in tried, f"the guide's query of 12 * 7 did not answer 84:\n{tried[-2000:]}"
        assert "api-1" in shell("docker compose logs --no-color api")
        shell("docker compose down", timeout=180)
        process.wait(timeout=120)
    except BaseException as error:
        process.kill()
        raise AssertionError(
            f"{error}\nthe guide's up printed:\n{(tmp_path / 'up.log').read_text()[-4000:]}"
        ) from error
