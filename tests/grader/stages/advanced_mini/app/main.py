"""A stand-in advanced stage for the grader's tests: the contract's auth, cache, limits, metrics and logs."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, field_validator

from . import errors
from .config import Settings
from .docs import serve_docs
from .observability import REGISTRY, Observe, RateLimit, log, start_tracing
from .security import UNAUTHORIZED, User, authenticate, create_token, user_for
from .service import Service


class QueryRequest(BaseModel):
    query: str = Field(min_length=1, max_length=4000)
    session_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    max_iterations: int = Field(default=5, ge=1, le=20)

    @field_validator("query", mode="before")
    @classmethod
    def _strip(cls, value: object) -> object:
        return value.strip() if isinstance(value, str) else value


async def current_user(request: Request) -> User:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.ApiError(401, "unauthorized", "Not authenticated", UNAUTHORIZED)
    user = user_for(token, request.app.state.settings.secret_key)
    request.state.user = user.username
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def create_app() -> FastAPI:
    settings = Settings.from_env()
    service = Service(settings.delay, settings.sessions_file)
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.getLogger("uvicorn.access").disabled = True
        tracing = start_tracing(settings.otlp_endpoint)
        log("startup")
        yield
        if tracing is not None:
            tracing.shutdown()

    app = FastAPI(title="Grader test stage (advanced)", lifespan=lifespan, docs_url=None, redoc_url=None)
    serve_docs(app)
    app.state.settings = settings
    errors.install(app)

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"name": "mini", "version": "1.0", "docs_url": "/docs", "health_url": "/health"}

    @app.get("/health")
    async def health() -> dict[str, Any]:
        redis = await _redis_status(settings.redis_url)
        up = {"status": "up", "latency_ms": 0.1, "detail": "ok"}
        status = "healthy" if redis["status"] == "up" else "degraded"
        return {
            "status": status,
            "version": "1.0",
            "uptime_seconds": time.monotonic() - started,
            "dependencies": {"redis": redis, "llm": up, "database": up},
        }

    @app.post("/api/v1/auth/login")
    async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
        user = authenticate(form.username, form.password)
        token = create_token(user.username, settings.secret_key, settings.token_minutes)
        return {"access_token": token, "token_type": "bearer", "expires_in": settings.token_minutes * 60}

    @app.get("/api/v1/auth/me")
    async def me(user: CurrentUser) -> dict[str, Any]:
        return {"username": user.username, "full_name": user.full_name, "disabled": user.disabled}

    @app.post("/api/v1/query")
    async def query(body: QueryRequest, user: CurrentUser, response: Response) -> dict[str, Any]:
        answer = await service.answer(user.username, body.query, body.session_id, body.max_iterations)
        response.headers["X-Cache"] = "HIT" if answer["metadata"]["cached"] else "MISS"
        return answer

    @app.post("/api/v1/query/stream", response_class=EventSourceResponse)
    async def query_stream(body: QueryRequest, user: CurrentUser) -> AsyncIterator[ServerSentEvent]:
        answer = await service.answer(user.username, body.query, body.session_id, body.max_iterations)
        sid = answer["session_id"]
        yield ServerSentEvent(event="start", data={"type": "start", "content": "", "session_id": sid})
        yield ServerSentEvent(event="done", data={"type": "done", "content": answer["response"], "session_id": sid})

    @app.get("/api/v1/session/{session_id}")
    async def get_session(session_id: str, user: CurrentUser) -> dict[str, Any]:
        return service.session(session_id, user.username).info(session_id)

    @app.delete("/api/v1/session/{session_id}")
    async def delete_session(session_id: str, user: CurrentUser) -> dict[str, Any]:
        service.session(session_id, user.username)
        del service.sessions[session_id]
        service.save()
        return {"session_id": session_id, "deleted": True}

    @app.get("/api/v1/sessions")
    async def list_sessions(user: CurrentUser) -> dict[str, Any]:
        mine = [s.info(sid, False) for sid, s in service.sessions.items() if s.owner == user.username]
        return {"sessions": mine, "count": len(mine)}

    @app.post("/api/v1/tasks", status_code=202)
    async def create_task(body: QueryRequest, user: CurrentUser) -> dict[str, Any]:
        task_id = service.submit(user.username, body.query, body.max_iterations)
        return {"task_id": task_id, "status": "pending", "status_url": f"/api/v1/tasks/{task_id}"}

    @app.get("/api/v1/tasks/{task_id}")
    async def get_task(task_id: str, user: CurrentUser) -> dict[str, Any]:
        return service.task(task_id, user.username)

    @app.get("/api/v1/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RateLimit, settings=settings)
    app.add_middleware(Observe)
    return app


async def _redis_status(url: str) -> dict[str, Any]:
    if url.startswith("memory://"):
        return {"status": "up", "latency_ms": 0.0, "detail": "embedded"}
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        async with asyncio.timeout(0.5):
            _, writer = await asyncio.open_connection(host, int(port or 6379))
    except (OSError, TimeoutError):
        return {"status": "down", "latency_ms": None, "detail": "unreachable"}
    writer.close()
    return {"status": "up", "latency_ms": 0.1, "detail": "reachable"}


app = create_app()
