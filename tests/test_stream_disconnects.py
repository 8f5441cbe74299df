"""Clients that leave a stream early, against both solutions as real uvicorn processes: no error in the log."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.support.stage import ROOT, run_stage

LEAVERS = 30


async def _leave_after_first_token(client: httpx.AsyncClient, index: int) -> bool:
    body = {"query": f"hello {index}"}
    async with client.stream("POST", "/api/v1/query/stream", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                return True  # leaving the block closes the connection with the answer half sent
    return False


async def _leave_many(url: str, token: str | None) -> list[bool]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        left: list[bool] = []
        for batch in range(LEAVERS // 10):
            left += await asyncio.gather(*(_leave_after_first_token(client, batch * 10 + n) for n in range(10)))
        assert (await client.get("/health")).status_code == 200
        return left


@pytest.mark.parametrize("lab", ["medium", "advanced"])
def test_clients_leaving_mid_stream_log_no_error(lab: str) -> None:
    """30 clients close their stream right after the first token, with a model that makes tokens as fast as it
    can (so the server is busy sending when each leaves): the service logs no error and no traceback."""
    with tempfile.TemporaryDirectory() as folder:
        env = {
            "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "0",
            "OFFLINE_LLM_TOKEN_DELAY_MS": "0",
            "RATE_LIMIT_REQUESTS": "100000",
            "DATABASE_URL": f"sqlite+aiosqlite:///{Path(folder) / 'lab.db'}",
            "REDIS_URL": "memory://",
            "BCRYPT_ROUNDS": "4",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "solutions" / lab), os.environ.get("PYTHONPATH")])),
        }
        with run_stage(ROOT / "solutions" / lab, env) as stage:
            token = None
            if lab == "advanced":
                form = {"username": "demo", "password": "demo-password"}
                token = httpx.post(f"{stage.url}/api/v1/auth/login", data=form, timeout=30).json()["access_token"]
            left = asyncio.run(_leave_many(stage.url, token))
            log = stage.log()
    assert all(left), "a stream ended before its first token"
    errors = [line for line in log.splitlines() if _is_error(line)]
    assert not errors, "\n".join(errors[:3])[-3000:]


def _is_error(line: str) -> bool:
    if "Traceback" in line or "Exception in ASGI application" in line:
        return True
    try:
        record = json.loads(line)
    except ValueError:
        return " ERROR " in line or line.startswith("ERROR")
    return isinstance(record, dict) and record.get("level") in {"error", "critical"}
