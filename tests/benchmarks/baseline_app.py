"""The bench's ceilings: a bare FastAPI endpoint that parses a query body and answers with one Redis GET, and a
bare SSE endpoint whose first token waits only for the model's delays."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as redis
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

KEY_PREFIX = "bench:answer:"


class Query(BaseModel):
    """The same body shape as the solution's QueryRequest, without its validators."""

    query: str = Field(min_length=1, max_length=4000)
    session_id: str | None = None
    max_iterations: int = Field(default=5, ge=1, le=20)
    stream: bool = False


def answer_key(query: str) -> str:
    """Where the bench stores the answer to a query: normalised as the solution's cache key normalises it."""
    normalised = " ".join(query.lower().split())
    return KEY_PREFIX + hashlib.sha256(normalised.encode()).hexdigest()


def create_app() -> FastAPI:
    """The baseline application; it reads REDIS_URL when it starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(title="bench baseline", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/api/v1/query")
    async def query(body: Query, request: Request) -> Response:
        # The stored bytes are the answer's JSON already: nothing is decoded or re-encoded.
        raw = await request.app.state.redis.get(answer_key(body.query))
        if raw is None:
            return Response(b'{"error": "not_found"}', status_code=404, media_type="application/json")
        return Response(raw, media_type="application/json")

    @app.post("/api/v1/query/stream")
    async def query_stream(body: Query, delay_ms: float = 0, calls: int = 1) -> StreamingResponse:
        # Nothing but the model's own delays before the first token: what a client sees of the model alone.
        # Each of `calls` model calls is its own wait of `delay_ms`, as a service that calls the model in turn
        # waits for each answer (and its worker wakes up for each).
        async def events() -> AsyncIterator[bytes]:
            yield b'event: start\ndata: {"type": "start"}\n\n'
            for _ in range(max(1, min(calls, 10))):
                await asyncio.sleep(delay_ms / 1000)
            yield b'event: token\ndata: {"type": "token", "content": "Hello"}\n\n'
            yield b'event: done\ndata: {"type": "done"}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


app = create_app()
