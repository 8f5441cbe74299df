"""Answers the grader's first GET /health, then blocks its event loop on the next request, for an hour."""

import time

from fastapi import FastAPI

STARTED = time.monotonic()
app = FastAPI()
served = [0]


@app.middleware("http")
async def hang_after_the_first(request, call_next):  # type: ignore[no-untyped-def]
    served[0] += 1
    if served[0] > 1:
        time.sleep(3600)  # noqa: ASYNC251 - blocks the loop on purpose: nothing is answered, SIGTERM is never acted on
    return await call_next(request)


@app.get("/")
async def root() -> dict[str, str]:
    return {"name": "hostile", "version": "1", "docs_url": "/docs", "health_url": "/health"}


@app.get("/health")
async def health() -> dict[str, object]:
    return {"status": "healthy", "version": "1", "uptime_seconds": time.monotonic() - STARTED, "dependencies": {}}
