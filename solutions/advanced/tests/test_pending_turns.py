"""Cache hits that start a session: recorded in Redis, readable at once, written to the database behind."""

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import orjson
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from app.main import create_app
from app.pending_turns import PendingTurn, PendingTurns
from tests.support.services import RedisServer

from .conftest import login, make_settings, metric_value

QUESTION = "What is 12 * 7?"


def _session_rows(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        return {row[0] for row in connection.execute("SELECT session_id FROM sessions")}


def _hit(client: TestClient, headers: dict[str, str]) -> str:
    answer = client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)
    assert answer.headers["X-Cache"] == "HIT", answer.text
    return str(answer.json()["session_id"])


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the write-behind did not happen in time"
        time.sleep(0.05)


def test_a_hit_session_is_complete_at_once_and_reaches_the_database(tmp_path: Path) -> None:
    """A hit's new session answers GET and the list at once, and its row and checkpoint are written behind."""
    _hit_sessions_are_complete(tmp_path / "lab.db", redis_url="memory://")


@pytest.mark.service
def test_a_hit_session_is_complete_with_a_real_redis(tmp_path: Path, redis: RedisServer) -> None:
    """The same with a real Redis, where the read of the cached answer and the record of the turn are one
    script on the server."""
    _hit_sessions_are_complete(tmp_path / "lab.db", redis_url=redis.url)


def _hit_sessions_are_complete(database: Path, redis_url: str) -> None:
    with TestClient(create_app(make_settings(database, redis_url=redis_url))) as client:
        headers = login(client)
        first = client.post("/api/v1/query", json={"query": QUESTION}, headers=headers).json()
        hits = [_hit(client, headers) for _ in range(3)]
        info = client.get(f"/api/v1/session/{hits[0]}", headers=headers).json()
        assert info["message_count"] == 2
        assert info["messages"] == [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": first["response"]},
        ]
        listed = {s["session_id"] for s in client.get("/api/v1/sessions", headers=headers).json()["sessions"]}
        assert set(hits) <= listed
        _wait_until(lambda: set(hits) <= _session_rows(database))
        assert metric_value(client.get("/api/v1/metrics").text, "active_sessions") == 4


def test_a_hit_session_is_someone_elses_for_others(tmp_path: Path) -> None:
    """Another user asking in, reading or deleting a pending session gets 404, as for any other session."""
    with TestClient(create_app(make_settings(tmp_path / "lab.db"))) as client:
        demo, alice = login(client), login(client, "alice")
        client.post("/api/v1/query", json={"query": QUESTION}, headers=demo)
        sid = _hit(client, demo)
        asked = client.post("/api/v1/query", json={"query": "hi", "session_id": sid}, headers=alice)
        assert asked.status_code == 404
        assert client.get(f"/api/v1/session/{sid}", headers=alice).status_code == 404
        assert client.delete(f"/api/v1/session/{sid}", headers=alice).status_code == 404
        assert client.get(f"/api/v1/session/{sid}", headers=demo).json()["message_count"] == 2


def test_a_follow_up_in_a_hit_session_sees_the_first_turn(tmp_path: Path) -> None:
    """A follow-up question in a session whose first turn is still pending continues that conversation."""
    with TestClient(create_app(make_settings(tmp_path / "lab.db"))) as client:
        headers = login(client)
        client.post("/api/v1/query", json={"query": "my name is Kai"}, headers=headers)
        sid = client.post("/api/v1/query", json={"query": "my name is Kai"}, headers=headers).json()["session_id"]
        follow_up = client.post("/api/v1/query", json={"query": "what is my name?", "session_id": sid}, headers=headers)
        assert follow_up.json()["response"] == "Your name is Kai."
        messages = client.get(f"/api/v1/session/{sid}", headers=headers).json()["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * 2


def test_pending_turns_are_written_at_shutdown(tmp_path: Path) -> None:
    """With the embedded Redis, nothing pending is lost to a restart: shutdown writes it all."""
    database = tmp_path / "lab.db"
    settings = make_settings(database)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)
        hits = [_hit(client, headers) for _ in range(20)]
    assert set(hits) <= _session_rows(database)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        for sid in hits:
            assert client.get(f"/api/v1/session/{sid}", headers=headers).json()["message_count"] == 2


@pytest.mark.service
def test_a_turn_left_pending_by_a_crash_is_written_once(tmp_path: Path, redis: RedisServer) -> None:
    """With a real Redis, a turn that a dead process left pending is served and written by the next one, and a
    turn written but not yet forgotten (a crash between the two) is not added twice."""
    database = tmp_path / "lab.db"
    turn = PendingTurn("crashed-session", "demo", "hello", "q-1", "Hi! How can I help?", datetime.now(UTC))
    anyio.run(_record, redis.url, turn)  # what the dead process had recorded
    with TestClient(create_app(make_settings(database, redis_url=redis.url))) as client:
        headers = login(client)
        info = client.get(f"/api/v1/session/{turn.session_id}", headers=headers).json()
        assert [(m["role"], m["content"]) for m in info["messages"]] == [("user", "hello"), ("assistant", turn.answer)]
        assert turn.session_id in _session_rows(database)
        client.portal.call(_record, redis.url, turn)  # written, then the crash came before it was forgotten
        listed = client.get("/api/v1/sessions", headers=headers).json()["sessions"]
        assert [s["message_count"] for s in listed if s["session_id"] == turn.session_id] == [2]
        assert client.get(f"/api/v1/session/{turn.session_id}", headers=headers).json()["message_count"] == 2


async def _record(url: str, turn: PendingTurn) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await _record_with(PendingTurns(client), client, turn)
    finally:
        await client.aclose()


async def _record_with(pending: PendingTurns, client: aioredis.Redis, turn: PendingTurn) -> None:
    """Record the turn as a cache hit in a new session does: its answer read from a cached value."""
    await client.set("test:cached-answer", orjson.dumps({"response": turn.answer}))
    fields = {"session_id": turn.session_id, "owner": turn.owner, "question": turn.question}
    assert await pending.record_on_hit("test:cached-answer", **fields, question_id=turn.question_id) is not None


def test_an_embedded_redis_with_several_workers_writes_at_once(tmp_path: Path) -> None:
    """With REDIS_URL=memory:// each worker has a Redis of its own, which the others cannot read: with WORKERS
    above 1, a hit's new session is in the database before the answer leaves."""
    database = tmp_path / "lab.db"
    with TestClient(create_app(make_settings(database, workers=2))) as client:
        headers = login(client)
        client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)
        sid = _hit(client, headers)
        assert sid in _session_rows(database)


@pytest.mark.service
def test_a_turn_taken_off_the_queue_by_a_crashed_worker_is_written_after_a_restart(
    tmp_path: Path, redis: RedisServer
) -> None:
    """A real Redis: a turn whose queue entry a dying worker had taken is queued again at the next start, and
    written behind without anyone reading its session."""
    database = tmp_path / "lab.db"
    turn = PendingTurn("orphaned-session", "demo", "hello", "q-2", "Hi! How can I help?", datetime.now(UTC))
    anyio.run(_record_and_take, redis.url, turn)
    with TestClient(create_app(make_settings(database, redis_url=redis.url))):
        _wait_until(lambda: turn.session_id in _session_rows(database))


async def _record_and_take(url: str, turn: PendingTurn) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        pending = PendingTurns(client)
        await _record_with(pending, client, turn)
        assert await pending.next_sessions(10) == [turn.session_id]  # taken, and then the worker died
    finally:
        await client.aclose()


@pytest.mark.service
def test_an_idle_worker_looks_at_the_queue_less_and_less_often(tmp_path: Path, redis: RedisServer) -> None:
    """With nothing to write, the write-behind loop backs off (it used to ask Redis 20 times a second, forever),
    and a hit still reaches the database soon after."""
    database = tmp_path / "lab.db"
    with TestClient(create_app(make_settings(database, redis_url=redis.url))) as client:
        headers = login(client)
        client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)  # the miss that caches the answer
        _wait_until(lambda: len(_session_rows(database)) == 1)
        time.sleep(1.0)  # backed off by now

        def lpops() -> int:
            stats = _redis_info(redis.url, "commandstats").get("cmdstat_lpop", {})
            return int(stats.get("calls", 0))

        before = lpops()
        time.sleep(3.0)
        polls = lpops() - before
        hit = _hit(client, headers)
        written = time.monotonic()
        _wait_until(lambda: hit in _session_rows(database), seconds=10)
        waited = time.monotonic() - written
    assert polls <= 6, f"{polls} looks at an empty queue in 3 s (every 50 ms would be 60)"
    assert waited < 5, f"a hit waited {waited:.1f} s to be written behind"


def _redis_info(url: str, section: str) -> dict[str, dict[str, str]]:
    async def info() -> dict[str, dict[str, str]]:
        client = aioredis.Redis.from_url(url)
        try:
            return await client.info(section)  # type: ignore[no-any-return]
        finally:
            await client.aclose()

    return anyio.run(info)


@pytest.mark.service
def test_a_worker_whose_redis_is_down_backs_off_and_says_so_once(
    tmp_path: Path, redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis (a real server) stops just after a turn was written behind: the loop used to try again every 50 ms,
    logging a warning each time, for as long as Redis was down. Now it backs off and says so once; when Redis is
    back it says that too, and writes the next hit's turn."""
    database = tmp_path / "lab.db"
    with TestClient(create_app(make_settings(database, redis_url=redis.url, log_level="INFO"))) as client:
        headers = login(client)
        client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)  # the miss that caches the answer
        hit = _hit(client, headers)
        _wait_until(lambda: hit in _session_rows(database))  # the loop is looking often now: it just found a turn
        capsys.readouterr()
        redis.stop()
        time.sleep(2.0)
        while_down = capsys.readouterr().out
        redis.restart()  # empty: the answer is cached again by a miss
        client.post("/api/v1/query", json={"query": QUESTION}, headers=headers)
        later = _hit(client, headers)
        _wait_until(lambda: later in _session_rows(database))
        after = capsys.readouterr().out
    warnings = while_down.count("pending turns unreachable")
    assert warnings == 1, f"{warnings} warnings in 2 s with Redis down (the loop that did not back off logged 20)"
    assert after.count("pending turns reachable again") == 1, after[-2000:]
