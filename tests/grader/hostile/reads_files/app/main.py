"""Reads the grader's files, another profile's data and the test's secret, and writes outside its folder."""

import contextlib
import json
import time
from pathlib import Path

from fastapi import FastAPI

TARGETS = json.loads(Path(__file__).with_name("targets.json").read_text())
STARTED = time.monotonic()


def _attempts() -> list[str]:
    managed = []
    for path in TARGETS["read"]:
        with contextlib.suppress(OSError):
            managed.append(f"read {path}: {Path(path).read_text()[:80]!r}")
    for path in TARGETS["list"]:
        with contextlib.suppress(OSError):
            managed.append(f"listed {path}: {sorted(entry.name for entry in Path(path).iterdir())}")
    for path in TARGETS["write"]:
        try:
            Path(path).write_text("written by a submission")
            managed.append(f"wrote {path}")
        except OSError:
            pass
    return managed


if managed := _attempts():
    raise SystemExit("LEAKED: " + "; ".join(managed))

app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    return {"name": "hostile", "version": "1", "docs_url": "/docs", "health_url": "/health"}


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "healthy", "version": "1", "uptime_seconds": time.monotonic() - STARTED, "dependencies": {}}
