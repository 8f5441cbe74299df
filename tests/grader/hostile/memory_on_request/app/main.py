"""Starts well, then allocates memory on GET /, 64 MiB at a time, up to 4 GiB."""

import time

from fastapi import FastAPI

STARTED = time.monotonic()
CHUNK = 64 << 20
app = FastAPI()


@app.get("/")
async def root() -> dict[str, str]:
    hoard = [b"x" * CHUNK for _ in range(64)]
    return {"name": f"allocated {len(hoard) * CHUNK >> 20} MiB", "version": "1", "docs_url": "/", "health_url": "/"}


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "healthy", "version": "1", "uptime_seconds": time.monotonic() - STARTED, "dependencies": {}}
