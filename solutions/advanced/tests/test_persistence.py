"""Sessions, users and tasks live in the database: restarts lose nothing, instances share everything."""

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import structlog
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import text

from app import checkpoints, database
from app.checkpoints import open_checkpointer
from app.config import Settings
from app.database import create_engine, migrate, session_factory
from app.main import create_app
from app.sessions import SessionRecord, SessionStore
from tests.support.services import RedisServer, postgres_database, sqlite_write_lock_is_free

from .conftest import login, make_settings

STAGE = Path(__file__).resolve().parents[1]


def _name_round_trip(settings: Settings) -> None:
    with TestClient(create_app(settings)) as first:
        headers = login(first)
        sid = first.post("/api/v1/query", json={"query": "my name is Lin"}, headers=headers).json()["session_id"]
        task = first.post("/api/v1/tasks", json={"query": "What is 6 * 6?"}, headers=headers).json()["status_url"]
        deadline = time.monotonic() + 15
        while first.get(task, headers=headers).json()["status"] != "completed":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    with TestClient(create_app(settings)) as second:  # a restart: a new process's state, the same database
        headers = login(second)  # tokens survive too (same key), but log in as a new client would
        answer = second.post("/api/v1/query", json={"query": "what is my name?", "session_id": sid}, headers=headers)
        assert answer.json()["response"] == "Your name is Lin."
        info = second.get(f"/api/v1/session/{sid}", headers=headers).json()
        assert info["message_count"] == 4
        assert second.get(task, headers=headers).json()["result"]["response"] == "6 * 6 = 36."
        assert sid in {s["session_id"] for s in second.get("/api/v1/sessions", headers=headers).json()["sessions"]}


def test_restart_loses_no_session_or_task_on_sqlite(tmp_path: Path) -> None:
    """After a restart on the same SQLite file, the conversation and the finished task are all there."""
    _name_round_trip(make_settings(tmp_path / "lab.db"))


@pytest.mark.service
def test_restart_loses_no_session_or_task_on_postgresql(tmp_path: Path) -> None:
    """The same on a real PostgreSQL database, migrated by Alembic at start-up."""
    with postgres_database() as url:
        _name_round_trip(make_settings(tmp_path / "unused", database_url=url))


# One worker's start-up: its app's lifespan, begun once every worker of the round has imported everything.
_WORKER = """
import asyncio, pathlib, sys, time
from asgi_lifespan import LifespanManager
from app.main import create_app

async def start(barrier: pathlib.Path, workers: int) -> None:
    app = create_app()
    (barrier / str(sys.argv[3])).touch()
    deadline = time.monotonic() + 60
    while len(list(barrier.iterdir())) < workers and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    async with LifespanManager(app, startup_timeout=60):
        pass

asyncio.run(start(pathlib.Path(sys.argv[1]), int(sys.argv[2])))
"""


def _start_together(tmp_path: Path, database_url: str, workers: int = 3) -> None:
    """Start `workers` processes' lifespans at the same moment on one database: all must start."""
    barrier = tmp_path / f"barrier-{time.monotonic_ns()}"
    barrier.mkdir()
    settings = {"DATABASE_URL": database_url, "REDIS_URL": "memory://", "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "ERROR"}
    env = {**os.environ, **settings}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(barrier), str(workers), str(index)],
            cwd=STAGE,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for index in range(workers)
    ]
    failures = []
    for process in processes:
        _, stderr = process.communicate(timeout=120)
        if process.returncode != 0:
            raised = re.findall(r"^(?!DETAIL|HINT)[A-Za-z_][\w.]*: .*$", stderr.decode(errors="replace"), re.MULTILINE)
            failures.append(raised[-1] if raised else f"exit status {process.returncode}")
    assert not failures, f"{len(failures)} of {workers} workers did not start: {failures}"


def test_workers_starting_together_on_a_new_sqlite_database_all_start(tmp_path: Path) -> None:
    """Each worker migrates and sets up checkpoints at start-up: on a new file, one at a time, so none fails."""
    for round_ in range(2):
        _start_together(tmp_path, f"sqlite+aiosqlite:///{tmp_path / f'new-{round_}.db'}")


@pytest.mark.service
def test_workers_starting_together_on_a_new_postgresql_database_all_start(tmp_path: Path) -> None:
    """The same on PostgreSQL (the compose demo's first start): Alembic's tables and LangGraph's checkpoint tables."""
    for _ in range(2):
        with postgres_database() as url:
            _start_together(tmp_path, url)


async def _two_instances(settings: Settings) -> None:
    first, second = create_app(settings), create_app(settings)
    async with LifespanManager(first), LifespanManager(second):
        a, b = (_client(app) for app in (first, second))
        try:
            token = (await a.post("/api/v1/auth/login", data={"username": "demo", "password": "demo-password"})).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            sid = (await a.post("/api/v1/query", json={"query": "my name is Kai"}, headers=headers)).json()[
                "session_id"
            ]
            answer = await b.post(
                "/api/v1/query", json={"query": "what is my name?", "session_id": sid}, headers=headers
            )
            assert answer.json()["response"] == "Your name is Kai."
            # Concurrent turns on one session through both instances: every message lands.
            questions = [f"What is {n} + 1?" for n in range(8)]
            await asyncio.gather(
                *(
                    (a, b)[n % 2].post("/api/v1/query", json={"query": q, "session_id": sid}, headers=headers)
                    for n, q in enumerate(questions)
                )
            )
            info = (await a.get(f"/api/v1/session/{sid}", headers=headers)).json()
            assert info["message_count"] == 2 * (2 + len(questions))
            assert [m["role"] for m in info["messages"]] == ["user", "assistant"] * (2 + len(questions))
        finally:
            await a.aclose()
            await b.aclose()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test", timeout=30)


@pytest.mark.anyio
async def test_two_instances_share_sessions(tmp_path: Path, redis: RedisServer) -> None:
    """Two instances on one database and one Redis serve the same sessions, and their turns take turns."""
    await _two_instances(make_settings(tmp_path / "shared.db", redis_url=redis.url))


@pytest.mark.anyio
@pytest.mark.service
async def test_two_instances_share_sessions_on_postgresql(tmp_path: Path, redis: RedisServer) -> None:
    """The same with PostgreSQL behind both."""
    with postgres_database() as url:
        await _two_instances(make_settings(tmp_path / "unused", database_url=url, redis_url=redis.url))


def test_unfinished_task_is_marked_failed_at_shutdown(tmp_path: Path) -> None:
    """A task still running when the server stops is failed with a reason, not left pending forever."""
    settings = make_settings(tmp_path / "t.db", offline_llm_first_token_delay_ms=2000)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        url = client.post("/api/v1/tasks", json={"query": "hi"}, headers=headers).json()["status_url"]
    with TestClient(create_app(make_settings(tmp_path / "t.db"))) as client:
        status = client.get(url, headers=login(client)).json()
    assert status["status"] == "failed"
    assert "shut down" in status["error"]


def test_a_task_left_running_by_a_crashed_instance_is_reported_failed(client: TestClient, database: Path) -> None:
    """Another instance died (SIGKILL, a lost machine) with a task running and never restarted: once the task is
    older than any run can take, polling it says failed with the reason, instead of running forever."""
    headers = login(client)
    with sqlite3.connect(database) as connection:
        connection.execute(
            "INSERT INTO tasks (task_id, owner, status, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
            ("orphan", "demo", "running", "2020-01-01 00:00:00.000000", "2020-01-01 00:00:00.000000"),
        )
    status = client.get("/api/v1/tasks/orphan", headers=headers).json()
    assert status["status"] == "failed", status
    assert "stopped before it finished" in status["error"]
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT status FROM tasks WHERE task_id = 'orphan'").fetchone() == ("failed",)


async def _record_turns(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        store = SessionStore(session_factory(engine), aioredis.Redis(), lock_seconds=1)
        first_at, later = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), datetime(2026, 1, 2, 3, 9, tzinfo=UTC)
        created = await store.record_turn("s-1", "alice", 2, at=first_at)
        updated = await store.record_turn("s-1", "mallory", 4, at=later)  # the owner is never changed by a turn
        stored = await store.get("s-1")
    finally:
        await engine.dispose()
    assert created == SessionRecord("s-1", "alice", first_at, first_at, 2)
    assert updated == SessionRecord("s-1", "alice", first_at, later, 4)
    assert stored == updated


def test_a_turn_creates_then_updates_the_session_row_on_sqlite(tmp_path: Path) -> None:
    """A session's row: created by its first turn (created = updated), then only its time and count change."""
    asyncio.run(_record_turns(f"sqlite+aiosqlite:///{tmp_path / 'rows.db'}"))


@pytest.mark.service
def test_a_turn_creates_then_updates_the_session_row_on_postgresql() -> None:
    """The same upsert on PostgreSQL."""
    with postgres_database() as url:
        asyncio.run(_record_turns(url))


async def _cancel_checkpoint_writes(database: Path, writes: int) -> list[int]:
    async with open_checkpointer(f"sqlite+aiosqlite:///{database}") as saver:
        locked_after = []
        for attempt in range(writes):
            config = {"configurable": {"thread_id": f"t-{attempt}", "checkpoint_ns": ""}}
            write = asyncio.create_task(saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {}))
            for _ in range(attempt % 4 + 1):  # cancel at different points of the write
                await asyncio.sleep(0)
            write.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await write
            assert write.cancelled(), "the caller must still learn that it was cancelled"
            if not sqlite_write_lock_is_free(database):
                locked_after.append(attempt)
        return locked_after


def test_a_cancelled_checkpoint_write_does_not_keep_the_database_locked(tmp_path: Path) -> None:
    """A run cancelled while its checkpoint is written (a client leaving, a deadline) must not leave the
    checkpointer's connection inside its write transaction: until some later checkpoint committed, every other
    writer would wait out the busy timeout and fail with "database is locked"."""
    database = tmp_path / "checkpoints.db"
    assert asyncio.run(_cancel_checkpoint_writes(database, 40)) == []


@pytest.mark.anyio
@pytest.mark.service
async def test_a_setup_lock_held_too_long_is_reported_then_ends_in_an_error() -> None:
    """A worker whose checkpoint setup hangs holds the setup lock: the others log their wait, then fail to start
    with an error that names the lock, instead of waiting forever. A lock let go is taken at once."""
    from psycopg import AsyncConnection
    from psycopg.rows import dict_row

    key = checkpoints._SETUP_LOCK_ID
    with postgres_database() as url:
        conninfo = url.replace("postgresql+asyncpg://", "postgresql://")
        options: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        async with (
            await AsyncConnection.connect(conninfo, **options) as holder,
            await AsyncConnection.connect(conninfo, **options) as waiter,
        ):
            await holder.execute("SELECT pg_advisory_lock(%s)", (key,))
            with _info_logs_captured() as logs, pytest.raises(RuntimeError, match=f"advisory lock {key}"):
                # A wait without an end would fail here with TimeoutError instead.
                await asyncio.wait_for(checkpoints._advisory_lock(waiter, key, patience=0.6, report_every=0.2), 10)
            waits = [entry for entry in logs if entry["event"].startswith("waiting for another worker")]
            assert waits and all(entry["log_level"] == "warning" for entry in waits), logs

            await holder.execute("SELECT pg_advisory_unlock(%s)", (key,))
            await asyncio.wait_for(checkpoints._advisory_lock(waiter, key, patience=5), timeout=10)
            taken = await (await holder.execute("SELECT pg_try_advisory_lock(%s) AS taken", (key,))).fetchone()
            assert taken is not None and taken["taken"] is False  # the waiter holds it now


@pytest.mark.anyio
@pytest.mark.service
async def test_a_migration_lock_held_too_long_ends_in_an_error_then_migrates_once_let_go() -> None:
    """A worker whose migration hangs holds the migration lock: another logs that it waits, then fails to start
    with an error that names the lock, instead of waiting forever. Once the lock is let go, it migrates."""
    from psycopg import AsyncConnection

    with postgres_database() as url:
        conninfo = url.replace("postgresql+asyncpg://", "postgresql://")
        engine = create_engine(url)
        try:
            async with await AsyncConnection.connect(conninfo, autocommit=True) as holder:
                await holder.execute("SELECT pg_advisory_lock(%s)", (database._MIGRATION_LOCK_ID,))
                with _info_logs_captured() as logs, pytest.raises(RuntimeError, match="migration lock"):
                    # A wait without an end would fail here with TimeoutError instead.
                    await asyncio.wait_for(migrate(engine, lock_patience=0.5), 15)
                assert any(entry["event"] == "waiting for another worker's migration" for entry in logs), logs
                await holder.execute("SELECT pg_advisory_unlock(%s)", (database._MIGRATION_LOCK_ID,))
            await asyncio.wait_for(migrate(engine, lock_patience=0.5), 30)
            async with engine.connect() as connection:
                revision = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        finally:
            await engine.dispose()
    assert revision is not None


@contextlib.contextmanager
def _info_logs_captured() -> Iterator[list[MutableMapping[str, Any]]]:
    """The log entries of the block, from INFO up (the tests' apps log from WARNING up), the configuration restored."""
    from structlog.testing import capture_logs

    configured = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**configured)


def _enter_wal_at(path: Path, moment: float, results: Any) -> None:
    try:
        connection = sqlite3.connect(path, timeout=30)  # the busy timeout, as the app's engine has it
        try:
            while time.time() < moment:  # all processes at one moment: a busy wait, a few hundred ms at most
                pass
            database._enter_wal_mode(connection, sqlite3.OperationalError)
            results.put(connection.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            connection.close()
    except Exception as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_connections_opening_a_new_sqlite_file_together_all_get_wal_mode(tmp_path: Path) -> None:
    """SQLite refuses a connection that asks for WAL mode while another converts the file, at once ("database is
    locked", no busy timeout): four processes asking at one moment on a new file, ten files, all end in WAL mode."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(10):
        results = context.Queue()
        moment = time.time() + 0.2
        processes = [
            context.Process(target=_enter_wal_at, args=(tmp_path / f"wal-{round_}.db", moment, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        outcomes += [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
    refused = [outcome for outcome in outcomes if outcome != "wal"]
    assert not refused, f"{len(refused)} of {len(outcomes)} connections failed: {refused[:3]}"
