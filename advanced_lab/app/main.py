"""The advanced lab's application: the agent service made production-ready."""

import gc
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import cast

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.models import OAuth2
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy.exc import IntegrityError

from .agent_service import AgentService
from .auth import AuthService, TokenVerifier, oauth2_scheme
from .cache import MEMORY_URL, CacheService, create_redis
from .checkpoints import open_checkpointer
from .config import Settings, get_settings
from .database import create_engine, migrate, session_factory
from .dependencies import SettingsDep
from .docs import DOCS_PATHS, install_docs
from .error_handlers import install_error_handlers
from .health import HealthChecker
from .logging_config import configure_logging, get_logger
from .middleware import BodySizeLimitMiddleware, InFlight, RateLimitMiddleware, RequestContextMiddleware
from .models import HealthResponse, RootInfo
from .monitoring import Metrics, MetricsMiddleware, RouteTemplates, mark_process_dead
from .pending_turns import PendingTurns, writing_behind
from .rate_limit import LoginThrottle, RateLimiter
from .redis_batch import RedisBatch
from .routes import agent, auth, metrics
from .sessions import SessionStore
from .tasks import TaskManager
from .tracing import create_tracer_provider, instrument_app

logger = get_logger(__name__)
UNLIMITED_PATHS = ("/", "/health", "/openapi.json", *DOCS_PATHS)
# The groups of /docs, in the order a reader meets them: log in first, then ask the agent.
OPENAPI_TAGS = [
    {"name": "auth", "description": "Log in for a bearer token, and see who you are."},
    {"name": "agent", "description": "Ask the agent (JSON or streamed), manage your sessions and background tasks."},
    {"name": "monitoring", "description": "Prometheus metrics."},
    {"name": "service", "description": "Where things are, and whether the service and its dependencies are up."},
]


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; clients are created here but nothing connects until lifespan starts."""
    settings = settings or get_settings()
    # Here rather than in lifespan, so that uvicorn's first lines are structured too.
    configure_logging(settings)
    redis_client = create_redis(settings)
    redis_batch = RedisBatch(redis_client)
    cache = CacheService(redis_client, default_ttl=settings.cache_ttl)
    verifier = TokenVerifier(settings)
    app_metrics = Metrics()
    in_flight = InFlight()
    provider = create_tracer_provider(settings) if settings.tracing_enabled else None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        async with AsyncExitStack() as stack:
            stack.push_async_callback(redis_client.aclose)
            stack.push_async_callback(redis_batch.aclose)
            stack.push_async_callback(engine.dispose)
            stack.callback(mark_process_dead)
            await migrate(engine)
            db = session_factory(engine)
            auth_service = AuthService(
                db, verifier, bcrypt_rounds=settings.bcrypt_rounds, user_cache_seconds=settings.user_cache_seconds
            )
            try:
                await auth_service.seed_demo_users()
            except IntegrityError:
                logger.info("demo users seeded by another worker")
            checkpointer = await stack.enter_async_context(open_checkpointer(settings.database_url))
            sessions = SessionStore(db, redis_client, lock_seconds=settings.agent_timeout_seconds + 10)
            tracer = provider.get_tracer("app.agent") if provider else trace.NoOpTracer()
            # Written behind only through a Redis every worker shares: an embedded one is each worker's own.
            embedded = settings.effective_redis_url == MEMORY_URL or not settings.redis_enabled
            pending = PendingTurns(redis_client, batch=redis_batch) if not embedded or settings.workers == 1 else None
            service = AgentService(
                settings,
                checkpointer=checkpointer,
                sessions=sessions,
                cache=cache,
                metrics=app_metrics,
                pending=pending,
                tracer=tracer,
            )
            stack.push_async_callback(service.unwound)
            if pending is not None:
                await stack.enter_async_context(
                    writing_behind(pending, service.conversations.fold, in_flight.idle, embedded=embedded)
                )
            tasks = TaskManager(db, stale_after_seconds=settings.agent_timeout_seconds + 60)
            stack.push_async_callback(tasks.shutdown)
            await tasks.fail_stale()
            await service.conversations.recount()
            app.state.auth_service, app.state.agent_service, app.state.task_manager = auth_service, service, tasks
            app.state.health = HealthChecker(settings, cache, engine, service.model_name)
            # What exists now (the graph, models, schemas: some 270,000 objects) lives as long as the worker. Frozen,
            # the collector no longer walks it: each full collection took ~150 ms of a busy worker, and was its p99.
            gc.collect()
            gc.freeze()
            logger.info("started", environment=settings.environment, provider=settings.llm_provider)
            yield
        if provider is not None:
            provider.shutdown()

    app = FastAPI(
        title=settings.api_title,
        version=settings.api_version,
        description="The course's LangGraph agent as a production service: auth, caching, rate limits, metrics.",
        debug=settings.debug,
        lifespan=lifespan,
        docs_url=None,  # app/docs.py serves /docs and /redoc, without a CDN
        redoc_url=None,
        openapi_tags=[tag for tag in OPENAPI_TAGS if tag["name"] != "monitoring" or settings.metrics_enabled],
    )
    app.state.settings, app.state.cache, app.state.metrics = settings, cache, app_metrics
    app.state.login_throttle = LoginThrottle(
        redis_client, limit=settings.login_max_failures, window=settings.login_failure_window
    )
    # The docs' Authorize button posts to the login route under this app's prefix.
    flows = cast(OAuth2, oauth2_scheme.model).flows
    if flows.password is not None:
        flows.password.tokenUrl = f"{settings.api_prefix}/auth/login"
    install_error_handlers(app)
    # A request is matched against the routes in the order they were added: the agent's, which take nearly all
    # the traffic, go first (the docs keep their own order, OPENAPI_TAGS).
    app.include_router(agent.router, prefix=settings.api_prefix)
    app.include_router(auth.router, prefix=settings.api_prefix)
    if settings.metrics_enabled:
        app.include_router(metrics.router, prefix=settings.api_prefix)
    _add_service_routes(app)
    install_docs(app)
    if provider is not None:
        instrument_app(app, provider)
    # Added innermost first: the request context runs first, so every response and log line has its id.
    if settings.rate_limit_enabled:
        # TODO 19: leave the root, health, docs and metrics unlimited
        exempt: tuple[str, ...] = ()
        limiter = RateLimiter(
            redis_client, limit=settings.rate_limit_requests, window=settings.rate_limit_window, batch=redis_batch
        )
        app.add_middleware(RateLimitMiddleware, limiter=limiter, verifier=verifier, exempt_paths=exempt)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Request-ID", "X-Cache", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"],
    )
    if settings.metrics_enabled:
        app.add_middleware(MetricsMiddleware, metrics=app_metrics, templates=RouteTemplates(app.routes))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestContextMiddleware, in_flight=in_flight)
    return app


def _add_service_routes(app: FastAPI) -> None:
    @app.get("/", response_model=RootInfo, tags=["service"])
    async def root(settings: SettingsDep) -> RootInfo:
        """Where the docs and the health check are."""
        return RootInfo(name=settings.api_title, version=settings.api_version, docs_url="/docs", health_url="/health")

    @app.get(
        "/health",
        response_model=HealthResponse,
        tags=["service"],
        responses={503: {"model": HealthResponse, "description": "Unhealthy: the database is down."}},
    )
    async def health() -> JSONResponse:
        """healthy, degraded (Redis or the LLM down; still serving) or unhealthy (503), with each dependency."""
        report = await app.state.health.check()
        return JSONResponse(report.model_dump(mode="json"), status_code=503 if report.status == "unhealthy" else 200)


app = create_app()
