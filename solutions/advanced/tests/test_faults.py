"""Faults: a failing, hanging or babbling LLM provider, clients that leave, Redis that goes away, a shutdown."""

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis as syncredis
import redis.asyncio as aioredis
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.asyncio.connection import AbstractConnection

from app.auth import User
from app.main import create_app
from app.models import QueryRequest
from app.sessions import SessionStore
from tests.support.openai_server import OpenAITestServer, run_openai_test_server
from tests.support.services import RedisServer
from tests.support.sse import parse_sse
from tests.support.stage import free_port, run_stage, stop

from .conftest import login, make_settings, metric_value

STAGE = Path(__file__).resolve().parents[1]
TIMEOUT_SECONDS = 1.5


def _agent_run_tasks(client: TestClient) -> list[str]:
    """The names of the graph-running tasks alive in the app's event loop."""

    async def names() -> list[str]:
        return [task.get_name() for task in asyncio.all_tasks() if task.get_name().startswith("agent-run-")]

    return client.portal.call(names)  # type: ignore[union-attr]


def _settle(client: TestClient, seconds: float = 2.0) -> None:
    """Wait (bounded) until no agent run is active and no run task is left; assert it."""
    service = client.app.state.agent_service  # type: ignore[attr-defined]
    deadline = time.monotonic() + seconds
    while (service.active_runs or _agent_run_tasks(client)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.active_runs == 0, "an agent run is still active"
    assert _agent_run_tasks(client) == [], "a graph task outlived its request"


@pytest.fixture
def llm() -> Iterator[OpenAITestServer]:
    with run_openai_test_server() as server:
        yield server


@pytest.fixture
def openai_client(tmp_path: Path, llm: OpenAITestServer) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path / "o.db",
        llm_provider="openai",
        openai_base_url=llm.base_url,
        openai_api_key="sk-test-key-never-shown",
        openai_model="test-model",
        openai_max_retries=0,
        agent_timeout_seconds=TIMEOUT_SECONDS,
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("error", 502, "upstream_error"),
        ("unauthorized", 502, "upstream_error"),
        ("garbage", 502, "upstream_error"),
        ("hang", 504, "timeout"),
    ],
)
def test_provider_fault_is_an_error_response_and_the_session_stays_whole(
    openai_client: TestClient, llm: OpenAITestServer, mode: str, status: int, code: str
) -> None:
    """A provider that fails, refuses the key, answers garbage or hangs: 502/504 ErrorResponse (an error event when
    streaming), the run's task is gone at once, nothing is cached, and the session keeps only whole turns."""
    client = openai_client
    headers = login(client)
    sid = client.post("/api/v1/query", json={"query": "hello"}, headers=headers).json()["session_id"]
    llm.mode = mode
    started = time.monotonic()
    response = client.post("/api/v1/query", json={"query": "again", "session_id": sid}, headers=headers)
    elapsed = time.monotonic() - started
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert response.json()["request_id"] == response.headers["X-Request-ID"]
    assert "sk-test-key-never-shown" not in response.text
    assert elapsed < TIMEOUT_SECONDS + 5
    _settle(client)
    events = parse_sse(
        client.post("/api/v1/query/stream", json={"query": "again", "session_id": sid}, headers=headers).text
    )
    assert [event for event, _ in events] == ["start", "error"]
    assert events[-1][1]["metadata"]["code"] == code
    _settle(client)
    if mode == "hang":
        metrics = client.get("/api/v1/metrics").text
        assert metric_value(metrics, "agent_executions_total", status="timeout") == 2
    llm.mode = "ok"
    retried = client.post("/api/v1/query", json={"query": "again", "session_id": sid}, headers=headers)
    assert retried.status_code == 200
    assert retried.headers["X-Cache"] == "MISS", "a failed answer must never be cached"
    messages = client.get(f"/api/v1/session/{sid}", headers=headers).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in messages if m["role"] == "user"] == ["hello", "again"]


@contextmanager
def _serve_in_thread(app: FastAPI) -> Iterator[tuple[str, asyncio.AbstractEventLoop]]:
    """Run the app under a real uvicorn server in a thread, on a loop of our own that the test can inspect."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(server.serve(),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}", loop
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        loop.close()


def _in_loop(loop: asyncio.AbstractEventLoop, what: Any) -> Any:
    """Evaluate `what()` inside the server's event loop (asyncio.all_tasks only sees the loop it runs in)."""

    async def call() -> Any:
        return what()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=5)


def _tasks(loop: asyncio.AbstractEventLoop) -> list[str]:
    return _in_loop(loop, lambda: [task.get_name() for task in asyncio.all_tasks()])  # type: ignore[no-any-return]


def _wait_for_no_runs(app: FastAPI, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while app.state.agent_service.active_runs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert app.state.agent_service.active_runs == 0, "an agent run went on after its client left"


async def _leave_after_first_token(client: httpx.AsyncClient, headers: dict[str, str], n: int) -> None:
    body = {"query": f"hello {n}", "session_id": f"leaver-{n}"}
    async with client.stream("POST", "/api/v1/query/stream", json=body, headers=headers) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["type"] == "token":
                return  # leaving the block closes the connection mid-stream


def test_a_hundred_disconnects_leave_no_run_and_no_task_behind(tmp_path: Path) -> None:
    """100 clients leave mid-stream (10 at a time): every run stops at once (no graph task generates on), no turn
    is saved, and the server's event loop is back to the tasks it had before them."""
    # About 30 tokens at 150 ms: a run that went on without its client would live seconds longer than the bound.
    settings = make_settings(tmp_path / "d.db", offline_llm_first_token_delay_ms=0, offline_llm_token_delay_ms=150)
    app = create_app(settings)
    with _serve_in_thread(app) as (url, loop):

        async def scenario() -> tuple[list[str], list[str], int]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                login_form = {"username": "demo", "password": "demo-password"}
                token = (await client.post("/api/v1/auth/login", data=login_form)).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                await _leave_after_first_token(client, headers, -1)  # warm up every lazy part once
                _wait_for_no_runs(app)
                before = _tasks(loop)
                for batch in range(10):
                    await asyncio.gather(
                        *(_leave_after_first_token(client, headers, batch * 10 + n) for n in range(10))
                    )
                    _wait_for_no_runs(app, seconds=1.5)
                right_after = _tasks(loop)
                listed = (await client.get("/api/v1/sessions", headers=headers)).json()
            return before, right_after, listed["count"]

        before, right_after, saved = asyncio.run(scenario())
        deadline = time.monotonic() + 5  # the connections' own tasks end as uvicorn notices each close
        while len(after := _tasks(loop)) > len(before) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [name for name in right_after if name.startswith("agent-run-")] == [], (
        "a run generated on after its client left"
    )
    assert saved == 0, "a turn was saved although its client left"
    assert len(after) <= len(before), f"tasks leaked after 100 disconnects: {sorted(set(after) - set(before))}"


def test_redis_stopped_mid_stream_and_mid_query_then_back(tmp_path: Path, redis: RedisServer) -> None:
    """Redis (a real server) stops while a stream and a query run: both finish (no 5xx), health says degraded, the
    limiter lets requests through without headers; when Redis returns, cache and limiter work again."""
    settings = make_settings(tmp_path / "r.db", redis_url=redis.url, offline_llm_token_delay_ms=30)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        with client.stream("POST", "/api/v1/query/stream", json={"query": "hello"}, headers=headers) as stream:
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("event: token"):
                    redis.stop()
                    break
            events = parse_sse("\n".join(lines))
        assert events[-1][0] == "done"
        redis.restart()
        service = client.app.state.agent_service  # type: ignore[attr-defined]
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(client.post, "/api/v1/query", json={"query": "What is 2 * 21?"}, headers=headers)
            deadline = time.monotonic() + 10
            while not service.active_runs and time.monotonic() < deadline:
                time.sleep(0.005)
            redis.stop()  # the query looked up the cache in a live Redis; it will store its answer in a dead one
            answered = pending.result(timeout=30)
        assert answered.status_code == 200, answered.text
        assert answered.json()["response"] == "2 * 21 = 42."
        degraded = client.get("/health").json()
        assert degraded["status"] == "degraded"
        assert degraded["dependencies"]["redis"]["status"] == "down"
        unlimited = client.get("/api/v1/sessions", headers=headers)
        assert unlimited.status_code == 200
        assert "X-RateLimit-Limit" not in unlimited.headers
        redis.restart()
        assert client.get("/health").json()["status"] == "healthy"
        assert "X-RateLimit-Limit" in client.get("/api/v1/sessions", headers=headers).headers
        statuses = [
            client.post("/api/v1/query", json={"query": "What is 5 * 5?"}, headers=headers).headers["X-Cache"]
            for _ in range(2)
        ]
        assert statuses == ["MISS", "HIT"]


def test_sigterm_finishes_the_request_in_flight_and_fails_the_background_task(tmp_path: Path) -> None:
    """SIGTERM while a query is answered and a background task runs: the query completes (200) and the process exits
    within a bound; the task is marked failed with the reason, which the next start reports."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'shutdown.db'}"
    env = {
        "DATABASE_URL": database,
        "BCRYPT_ROUNDS": "4",
        "SECRET_KEY": "shutdown-test-secret",
        "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "600",
        "OFFLINE_LLM_TOKEN_DELAY_MS": "40",
        "LOG_LEVEL": "WARNING",
    }
    with run_stage(STAGE, env) as stage, httpx.Client(base_url=stage.url, timeout=60) as client:
        form = {"username": "demo", "password": "demo-password"}
        headers = {"Authorization": f"Bearer {client.post('/api/v1/auth/login', data=form).json()['access_token']}"}
        task_url = client.post("/api/v1/tasks", json={"query": "What is 12 * 7?"}, headers=headers).json()["status_url"]
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(client.post, "/api/v1/query", json={"query": "hello"}, headers=headers)
            time.sleep(0.5)  # both are running now: the query takes two model calls, the task five
            started = time.monotonic()
            exit_code = stop(stage.process, grace=30)
            answer: Any = in_flight.result(timeout=5)
        assert time.monotonic() - started < 20, "shutdown waited far longer than a run can take"
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"]
        assert exit_code in {0, -signal.SIGTERM}
    with run_stage(STAGE, {**env, "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "0"}) as stage:
        token = httpx.post(f"{stage.url}/api/v1/auth/login", data=form).json()["access_token"]
        status = httpx.get(f"{stage.url}{task_url}", headers={"Authorization": f"Bearer {token}"}).json()
    assert status["status"] == "failed"
    assert "shut down" in status["error"]


def test_a_client_leaving_lets_the_run_clean_up_in_one_go(
    tmp_path: Path, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client leaving mid-stream cancels its run once, and the run's cleanup (the rollback, then the release of
    the session's lock) goes to its end. Starlette cancels a closing stream again on every turn of the event loop;
    when that reached the cleanup, the lock's release was cut off waiting for its reply, and redis-py dropped the
    connection it was on (to reconnect on the next request). A real Redis: an embedded one answers at once."""
    settings = make_settings(
        tmp_path / "d.db", redis_url=redis.url, offline_llm_first_token_delay_ms=0, offline_llm_token_delay_ms=150
    )
    app = create_app(settings)
    dropped: list[str] = []
    watching = threading.Event()
    disconnect = AbstractConnection.disconnect

    async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        if watching.is_set():
            dropped.append(type(self).__name__)
        await disconnect(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "disconnect", counted)
    with _serve_in_thread(app) as (url, _):

        async def scenario() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                login_form = {"username": "demo", "password": "demo-password"}
                token = (await client.post("/api/v1/auth/login", data=login_form)).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                await _leave_after_first_token(client, headers, -1)
                _wait_for_no_runs(app)
                watching.set()
                for n in range(10):
                    await _leave_after_first_token(client, headers, n)
                    _wait_for_no_runs(app)
                    # The same session again at once: its lock is free, and the abandoned turn is gone.
                    again = {"query": "hello again", "session_id": f"leaver-{n}"}
                    answer = await client.post("/api/v1/query", json=again, headers=headers)
                    assert answer.status_code == 200, answer.text
                    session = (await client.get(f"/api/v1/session/leaver-{n}", headers=headers)).json()
                    assert [m["content"] for m in session["messages"] if m["role"] == "user"] == ["hello again"]
                watching.clear()

        asyncio.run(scenario())
    assert dropped == [], f"{len(dropped)} Redis connection(s) dropped by 10 clients leaving: a cleanup was cut short"


@pytest.mark.service
def test_a_lock_granted_as_its_request_is_cancelled_is_given_back(redis: RedisServer) -> None:
    """The narrowest cancellation: Redis grants a session's lock, and the request is cancelled while the reply is
    on its way. The lock used to stay taken until it expired (agent timeout + 10 s), and the session's next turn
    waited that long; now it is given back at once. Replies reach the store through a proxy that holds them back,
    so the cancellation always comes after the grant and before the reply."""
    key = "agent:lock:session:s-cancelled"

    async def scenario() -> tuple[bool, float]:
        held_back = _RepliesHeldBack(redis.port, seconds=0.2)
        proxy = await asyncio.start_server(held_back.handle, "127.0.0.1", 0)
        port = proxy.sockets[0].getsockname()[1]
        client = aioredis.Redis(host="127.0.0.1", port=port)
        observer = syncredis.Redis.from_url(redis.url)  # straight to Redis
        store = SessionStore(cast(Any, None), client, lock_seconds=30)  # the lock needs no database
        try:

            async def take() -> None:
                async with store.lock("s-cancelled"):
                    await asyncio.sleep(60)

            task = asyncio.create_task(take())
            granted = await _polled(lambda: bool(observer.exists(key)), seconds=5)
            task.cancel()  # the grant's reply is still in the proxy
            with contextlib.suppress(asyncio.CancelledError):
                await task
            cancelled = time.monotonic()
            await _polled(lambda: not observer.exists(key), seconds=5)
            return granted, time.monotonic() - cancelled
        finally:
            observer.close()
            await client.aclose()
            proxy.close()
            await held_back.finished()

    granted, held = asyncio.run(scenario())
    assert granted, "the scenario did not happen: Redis never granted the lock"
    # Giving it back takes a few replies through the proxy (a new connection, the release script): about 1 s.
    assert held < 4, f"the cancelled request's lock was still taken {held:.1f} s later"


async def _polled(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether the condition came true within `seconds`, looking every 5 ms without blocking the loop."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return True
        await asyncio.sleep(0.005)
    return condition()


class _RepliesHeldBack:
    """A TCP proxy to Redis: requests go through at once, every reply comes back `seconds` late."""

    def __init__(self, redis_port: int, seconds: float) -> None:
        self.redis_port, self.seconds = redis_port, seconds
        self.connections: set[asyncio.Task[None]] = set()

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections.add(cast("asyncio.Task[None]", asyncio.current_task()))
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        await asyncio.gather(
            self._pump(client_reader, server_writer, 0), self._pump(server_reader, client_writer, self.seconds)
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        writer.close()  # the other side sees the end too, and its pump ends

    async def finished(self) -> None:
        """Wait until every connection through the proxy has ended (after its client closed it)."""
        await asyncio.wait_for(asyncio.gather(*self.connections), timeout=10)


@pytest.mark.service
def test_a_stream_left_while_its_lock_is_taken_runs_no_turn(tmp_path: Path, redis: RedisServer) -> None:
    """A client leaves while its stream is taking the session's lock. On Python 3.11 the cancellation can be lost:
    `asyncio.wait_for`, which redis-py wraps around each write, drops a cancellation that arrives as the write
    completes. The run then went on for nobody and saved its turn. The stream now also notes that its client
    left, and the run stops at its next chunk."""
    settings = make_settings(tmp_path / "left.db", redis_url=redis.url)
    app = create_app(settings)

    async def scenario() -> tuple[bool, list[str]]:
        observer = syncredis.Redis.from_url(redis.url)
        try:
            async with LifespanManager(app):
                service = app.state.agent_service
                user = User(username="demo", full_name="Demo", disabled=False)
                stream = service.stream_query(QueryRequest(query="hello"), user)
                first = asyncio.create_task(anext(stream))
                # Looked at after every turn of the loop: the client leaves as soon as Redis has granted the lock,
                # before the run has read the reply, and on Python 3.11 redis-py's wait_for then drops the
                # cancellation (the old code saved the turn in each of three tries).
                for _ in range(1000):
                    await asyncio.sleep(0)
                    if granted := bool(observer.keys("agent:lock:session:*")):
                        break
                first.cancel()  # the client leaves
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await first
                await stream.aclose()
                await service.unwound()
                saved = [record.session_id for record in await service.list_sessions(user)]
        finally:
            observer.close()
        return granted, saved

    granted, saved = asyncio.run(scenario())
    assert granted, "the scenario did not happen: Redis never granted the lock"
    assert saved == [], "a turn was saved although its client left while the session's lock was being taken"
