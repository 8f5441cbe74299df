"""Connects out: to a server of the test's, to the machine's Redis and PostgreSQL, and to the internet."""

import json
import socket
import time
from pathlib import Path

from fastapi import FastAPI

TARGETS = json.loads(Path(__file__).with_name("targets.json").read_text())
STARTED = time.monotonic()


def _reached() -> list[str]:
    reached = []
    for host, port in TARGETS["connect"]:
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                sock.sendall(b"LEAKED from a submission\n")
            reached.append(f"{host}:{port}")
        except OSError:
            pass
    return reached


if reached := _reached():
    raise SystemExit(f"LEAKED: connected to {', '.join(reached)}")

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"name": "hostile", "version": "1", "docs_url": "/docs", "health_url": "/health"}


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "healthy", "version": "1", "uptime_seconds": time.monotonic() - STARTED, "dependencies": {}}
