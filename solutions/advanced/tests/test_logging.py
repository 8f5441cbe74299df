"""Structured logs: one JSON object per line on stdout with the contract's fields, and no secrets."""

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.stage import free_port, stop

STAGE = Path(__file__).resolve().parents[1]
PASSWORD, WRONG = "demo-password", "wrong-secret-pw"
API_KEY, SECRET_KEY = "sk-this-key-must-never-be-logged", "a-secret-that-must-never-be-logged"


def _run_and_capture(tmp_path: Path, drive: Callable[[httpx.Client], None]) -> list[dict[str, Any]]:
    """Start the stage as uvicorn, let `drive` make requests, stop it; every stdout line, parsed as JSON."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'log.db'}",
        "BCRYPT_ROUNDS": "4",
        "LOG_FORMAT": "json",
        "OPENAI_API_KEY": API_KEY,
        "SECRET_KEY": SECRET_KEY,
    }
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port)]
    log = tmp_path / "stdout.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=STAGE, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get("/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None, "the stage did not start"
                    time.sleep(0.05)
            drive(client)
    finally:
        stop(process)
    text = log.read_text()
    for secret in (PASSWORD, WRONG, API_KEY, SECRET_KEY, "not-a-real-token-abc123", "eyJ"):
        assert secret not in text, f"{secret!r} appears in the log"
    return [json.loads(line) for line in text.splitlines()]  # fails on any line that is not JSON


def _drive(client: httpx.Client) -> None:
    token = client.post("/api/v1/auth/login", data={"username": "demo", "password": PASSWORD}).json()["access_token"]
    client.post("/api/v1/auth/login", data={"username": "demo", "password": WRONG})
    client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-real-token-abc123"})
    client.get("/api/v1/sessions", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "trace-me-42"})


def test_every_line_is_json_with_the_contract_fields_and_no_secret(tmp_path: Path) -> None:
    """Every stdout line (uvicorn's included) is JSON with timestamp, level and event; one access line per
    request with method, path, status, duration, client, request id and the user; no secret anywhere."""
    records = _run_and_capture(tmp_path, _drive)
    assert any(r.get("logger") == "uvicorn.error" for r in records), "uvicorn's own lines go through structlog"
    for record in records:
        assert {"timestamp", "level", "event"} <= set(record)
        assert record["timestamp"].endswith("Z")
    access = [r for r in records if r["event"] == "request"]
    assert [(r["path"], r["status_code"]) for r in access] == [
        ("/health", 200),
        ("/api/v1/auth/login", 200),
        ("/api/v1/auth/login", 401),
        ("/api/v1/auth/me", 401),
        ("/api/v1/sessions", 200),
    ]
    for record in access:
        assert {"method", "path", "status_code", "duration_ms", "client", "request_id"} <= set(record)
    assert access[-1]["request_id"] == "trace-me-42"
    assert access[-1]["user"] == "demo"
    assert "user" not in access[3]
