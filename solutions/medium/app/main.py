"""The medium lab's application: the agent behind async FastAPI endpoints."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .agent_service import AgentService
from .config import Settings, get_settings
from .dependencies import AgentDep, SettingsDep
from .docs import DOCS_PATHS, install_docs
from .error_handlers import install_error_handlers
from .logging_config import configure_logging
from .middleware import RateLimitMiddleware, RequestIdMiddleware
from .models import DependencyStatus, HealthResponse, RootInfo
from .routes import agent
from .tasks import TaskManager

UNLIMITED_PATHS = ("/", "/health", "/openapi.json", *DOCS_PATHS)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; nothing is created or contacted until lifespan starts."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        app.state.agent_service = AgentService(settings)
        app.state.task_manager = TaskManager(settings.max_finished_tasks)
        app.state.started_at = time.monotonic()
        try:
            yield
        finally:
            await app.state.task_manager.shutdown()

    app = FastAPI(
        title=settings.api_title,
        version=settings.api_version,
        description="A LangGraph multi-agent workflow (supervisor, researcher with tools, writer) served by FastAPI.",
        debug=settings.debug,
        lifespan=lifespan,
        docs_url=None,  # app/docs.py serves /docs and /redoc, without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.include_router(agent.router, prefix=settings.api_prefix)
    _add_service_routes(app)
    install_docs(app)
    # Added last, so it runs first: every response, a 429 included, carries the request id.
    if settings.rate_limit_enabled:
        app.add_middleware(
            RateLimitMiddleware,
            limit=settings.rate_limit_requests,
            window=settings.rate_limit_window,
            exempt_paths=UNLIMITED_PATHS,
        )
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=[
            "X-Request-ID",
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
            "Retry-After",
        ],
    )
    app.add_middleware(RequestIdMiddleware)
    return app


def _add_service_routes(app: FastAPI) -> None:
    @app.get("/", response_model=RootInfo, tags=["service"])
    async def root(settings: SettingsDep) -> RootInfo:
        """Where the docs and the health check are."""
        return RootInfo(name=settings.api_title, version=settings.api_version, docs_url="/docs", health_url="/health")

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health(settings: SettingsDep, agent: AgentDep) -> HealthResponse:
        """Whether the service is up, and the state of what it depends on."""
        llm = DependencyStatus(status="up", detail=f"{agent.provider} model {agent.model_name}")
        return HealthResponse(
            status="healthy",
            version=settings.api_version,
            uptime_seconds=round(time.monotonic() - app.state.started_at, 3),
            dependencies={"llm": llm},
        )


app = create_app()
