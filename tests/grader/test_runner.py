"""How the grader starts a stage: on a port it holds from the start, asked once, stopped when it is too slow."""

import asyncio
import errno
import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from grader import runner

pytestmark = pytest.mark.skipif(os.name != "posix", reason="a socket is handed to the stage on POSIX only")

# A stage that takes `SECONDS` to import (longer than one poll's 2 s connect timeout), then says what it serves.
SLOW_STAGE = """
import time

time.sleep(SECONDS)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    print("served", scope["path"], flush=True)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def _slow_stage(folder: Path, seconds: float) -> Path:
    (folder / "app").mkdir(parents=True)
    (folder / "app" / "__init__.py").write_text("")
    (folder / "app" / "main.py").write_text(SLOW_STAGE.replace("SECONDS", str(seconds)))
    return folder


class HeldPorts(list[int]):
    """The ports the runner opens for stages, as it opens them; `opened` is set at the first."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__()
        self.opened = asyncio.Event()
        hold = runner._held_port

        def held_port() -> socket.socket | None:
            sock = hold()
            if sock is not None:
                self.append(sock.getsockname()[1])
                self.opened.set()
            return sock

        monkeypatch.setattr(runner, "_held_port", held_port)


def test_the_port_is_the_stages_from_the_moment_it_is_chosen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the stage still imports, nothing else can bind its port; once it serves, it has had one /health."""
    stage, ports = _slow_stage(tmp_path, 3), HeldPorts(monkeypatch)

    async def scenario() -> tuple[int, str, list[str]]:
        async def start() -> tuple[str, list[str]]:
            async with runner.run_stage(stage, {}, start_timeout=60) as running:
                await asyncio.sleep(0.5)  # a request still queued would have been served by now
                return running.url, [line for line in running.log.out().splitlines() if line.startswith("served")]

        starting = asyncio.ensure_future(start())
        await asyncio.wait_for(ports.opened.wait(), 30)  # the start's first step opens the port
        with socket.socket() as other:
            try:
                other.bind((runner.HOST, ports[0]))
            except OSError as error:
                refused = error.errno or 0
            else:
                refused = 0
        url, served = await starting
        return refused, url, served

    refused, url, served = asyncio.run(scenario())
    assert refused == errno.EADDRINUSE, "another process could bind the stage's port while the stage started"
    assert url == f"http://{runner.HOST}:{ports[0]}"
    assert served == ["served /health"], "polls abandoned during the start were served once it did"


def test_a_stage_that_never_answers_is_stopped_at_the_start_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start fails after `start_timeout`, says so with the log, and the stage and its port are gone."""
    stage, ports = _slow_stage(tmp_path, 60), HeldPorts(monkeypatch)

    async def start() -> None:
        async with runner.run_stage(stage, {}, start_timeout=1):
            pytest.fail("a stage that sleeps through its import answered")

    started = time.monotonic()
    with pytest.raises(runner.StageStartError, match=r"did not answer GET /health within 1 s"):
        asyncio.run(start())
    assert time.monotonic() - started < 15  # the timeout, then a SIGTERM: far from the stage's 60 s
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((runner.HOST, ports[0]), timeout=2).close()


def test_the_redis_down_port_refuses_connections_and_cannot_be_taken() -> None:
    """The `redis_down` profile's Redis port: a connection is refused, and no other process can listen there."""
    with runner.refusing_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((runner.HOST, port), timeout=2).close()
        with socket.socket() as other, pytest.raises(OSError, match="in use") as taken:
            other.bind((runner.HOST, port))
        assert taken.value.errno == errno.EADDRINUSE


# A stage that says whether a library it imports was there before it imported it, and what setting it got.
WARM_STAGE = """
import os
import sys

WARM = "colorsys" in sys.modules  # only a fork server's import of the stage's libraries has it here

import colorsys  # noqa: E402


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    body = f"{WARM} {os.environ.get('GRADER_TEST_SETTING')} {os.getpid()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""


def test_a_start_forked_from_the_fork_server_has_its_libraries_and_its_own_settings(tmp_path: Path) -> None:
    """Forked starts find the stage's libraries imported already (a cold start does not), each serves with its
    own settings in its own process, and each is stopped by the runner; a stage whose import fails is reported
    as a start that exited."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text(WARM_STAGE)

    async def answer(server: runner.ForkServer | None, setting: str) -> tuple[str, int | None]:
        async with runner.run_stage(tmp_path, {"GRADER_TEST_SETTING": setting}, start_timeout=60, server=server) as r:
            async with httpx.AsyncClient(base_url=r.url) as client:
                body = (await client.get("/")).text
            process = r.process
        return body, process.returncode

    async def scenario() -> tuple[list[tuple[str, int | None]], tuple[str, int | None], str]:
        server = await runner.ForkServer.open(tmp_path, runner.stage_env({}))
        assert server is not None, "no fork server on this POSIX machine"
        try:
            forked = list(await asyncio.gather(answer(server, "one"), answer(server, "two")))
            (tmp_path / "app" / "main.py").write_text("raise SystemExit('the stage refuses')\n")
            try:
                async with runner.run_stage(tmp_path, {}, start_timeout=60, server=server):
                    pytest.fail("a stage that exits at import answered")
            except runner.StageStartError as error:
                failed = error.message
        finally:
            await asyncio.to_thread(server.close)
        (tmp_path / "app" / "main.py").write_text(WARM_STAGE)
        return forked, await answer(None, "cold"), failed

    forked, cold, failed = asyncio.run(scenario())
    (warm_one, setting_one, pid_one), (warm_two, setting_two, pid_two) = (body.split() for body, _ in forked)
    assert (warm_one, setting_one, warm_two, setting_two) == ("True", "one", "True", "two")
    assert pid_one != pid_two != str(os.getpid())
    assert all(code in (0, -15) for _, code in forked), forked
    assert cold[0].split()[:2] == ["False", "cold"]
    assert "exited with code 1 before it answered" in failed
