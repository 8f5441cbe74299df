"""Leaves a process behind: an orphan in a session of its own that ignores SIGTERM and sleeps for ten minutes."""

import json
import subprocess
import sys
import time
from pathlib import Path

from fastapi import FastAPI

TARGETS = json.loads(Path(__file__).with_name("targets.json").read_text())
STARTED = time.monotonic()
ORPHAN = "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); os.fork() or time.sleep(600)"
subprocess.Popen(
    [sys.executable, "-c", ORPHAN, TARGETS["token"]],
    start_new_session=True,
    stdin=subprocess.DEVNULL,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"name": "hostile", "version": "1", "docs_url": "/docs", "health_url": "/health"}


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "healthy", "version": "1", "uptime_seconds": time.monotonic() - STARTED, "dependencies": {}}
