"""Clients that leave a stream early, against both solutions as real uvicorn processes: no error in the log, and
sessions that hold whole turns only."""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.services import sqlite_write_lock_is_free
from tests.support.stage import ROOT, run_stage

LEAVERS = 30
QUESTIONS = ["hello", "What is 6 * 7?", "explain caching", "what time is it?", "my name is Lin"]
SESSIONS, ROUNDS, PER_ROUND = 6, 20, 8
# Leave at once, during the routing, at the first token (the answer is whole by then: no delay per token), a
# little later, or stay to the end.
LEAVE_AFTER: list[float | str | None] = [0.0, 0.002, "token", "token", 0.01, None]


async def _leave_at(
    client: httpx.AsyncClient, question: str, after: float | str | None, session_id: str | None = None
) -> bool:
    """Ask (in the session, else in a new one) and leave `after` seconds into the stream, at its first token
    ("token"), or never (None: read it to its end); True if a token came before leaving. Leaving the block closes
    the connection with the answer half sent."""
    body = {"query": question, "session_id": session_id} if session_id else {"query": question}
    tokens = False
    async with client.stream("POST", "/api/v1/query/stream", json=body) as response:
        started = time.monotonic()
        async for line in response.aiter_lines():
            tokens = tokens or line.startswith("event: token")
            if after == "token" and tokens:
                break
            if isinstance(after, float) and time.monotonic() - started >= after:
                break
    return tokens


async def _leave_many(url: str, token: str | None) -> list[bool]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        left: list[bool] = []
        for batch in range(LEAVERS // 10):
            left += await asyncio.gather(*(_leave_at(client, f"hello {batch * 10 + n}", "token") for n in range(10)))
        assert (await client.get("/health")).status_code == 200
        return left


def _env(lab: str, database: Path, first_token_ms: int = 0, token_ms: int = 0) -> dict[str, str]:
    return {
        "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": str(first_token_ms),
        "OFFLINE_LLM_TOKEN_DELAY_MS": str(token_ms),
        "RATE_LIMIT_REQUESTS": "100000",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "REDIS_URL": "memory://",
        "BCRYPT_ROUNDS": "4",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "solutions" / lab), os.environ.get("PYTHONPATH")])),
    }


def _login(url: str, lab: str) -> str | None:
    if lab != "advanced":
        return None
    form = {"username": "demo", "password": "demo-password"}
    token: str = httpx.post(f"{url}/api/v1/auth/login", data=form, timeout=30).json()["access_token"]
    return token


@pytest.mark.parametrize("lab", ["medium", "advanced"])
def test_clients_leaving_mid_stream_log_no_error(lab: str) -> None:
    """30 clients close their stream right after the first token, with a model that makes tokens as fast as it
    can (so the server is busy sending when each leaves): the service logs no error and no traceback."""
    with (
        tempfile.TemporaryDirectory() as folder,
        run_stage(ROOT / "solutions" / lab, _env(lab, Path(folder) / "lab.db")) as stage,
    ):
        left = asyncio.run(_leave_many(stage.url, _login(stage.url, lab)))
        log = stage.log()
    assert all(left), "a stream ended before its first token"
    errors = [line for line in log.splitlines() if _is_error(line)]
    assert not errors, "\n".join(errors[:3])[-3000:]


async def _leave_at_random(url: str, token: str | None, chooser: random.Random) -> list[dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sessions = [f"left-{n}" for n in range(SESSIONS)]
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        for _ in range(ROUNDS):
            leavers = [
                _leave_at(client, chooser.choice(QUESTIONS), chooser.choice(LEAVE_AFTER), chooser.choice(sessions))
                for _ in range(PER_ROUND)
            ]
            await asyncio.gather(*leavers)
        await asyncio.sleep(1.0)  # the last runs' cleanup (a rollback, a lock given back) ends meanwhile
        found = [await client.get(f"/api/v1/session/{session_id}") for session_id in sessions]
    return [response.json() for response in found if response.status_code == 200]


@pytest.mark.parametrize("lab", ["medium", "advanced"])
def test_streams_left_at_any_moment_leave_whole_turns(lab: str) -> None:
    """160 streams on six shared sessions, each left at a random moment (at once, during the routing, mid-answer,
    just after the last token) or read to the end: afterwards every session holds whole turns only (user and
    assistant alternating, counted as its record says), the log has no error, and no database connection still
    holds SQLite's write lock (another connection takes it at once)."""
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "lab.db"
        with run_stage(ROOT / "solutions" / lab, _env(lab, database, first_token_ms=5)) as stage:
            chooser = random.Random(lab)  # noqa: S311 - moments to leave at, not secrets
            sessions = asyncio.run(_leave_at_random(stage.url, _login(stage.url, lab), chooser))
            log = stage.log()
            locked = lab == "advanced" and not sqlite_write_lock_is_free(database)
    assert sessions, "no session kept a turn"
    for info in sessions:
        roles = [message["role"] for message in info["messages"]]  # type: ignore[attr-defined]
        assert roles == ["user", "assistant"] * (len(roles) // 2), f"{info['session_id']}: {roles}"
        assert info["message_count"] == len(roles), info
    errors = [line for line in log.splitlines() if _is_error(line)]
    assert not errors, "\n".join(errors[:3])[-3000:]
    assert not locked, "a connection still holds the database's write lock"


def _is_error(line: str) -> bool:
    if "Traceback" in line or "Exception in ASGI application" in line:
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return " ERROR " in line or line.startswith("ERROR")
    return isinstance(record, dict) and record.get("level") in {"error", "critical"}
