"""Dependency checks for /health: Redis (ping latency), the LLM provider and the database."""

import time

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from . import database
from .cache import MEMORY_URL, CacheService
from .config import Settings
from .models import DependencyStatus, HealthResponse

_PROBE_SECONDS = 2.0
_PROBE_CACHE_SECONDS = 30.0


class HealthChecker:
    """Checks each dependency; a probe of a remote LLM is remembered briefly so health stays cheap."""

    def __init__(self, settings: Settings, cache: CacheService, engine: AsyncEngine, model_name: str) -> None:
        self.settings = settings
        self.cache = cache
        self.engine = engine
        self.model_name = model_name
        self.started = time.monotonic()
        self._llm: tuple[float, DependencyStatus] | None = None

    async def check(self) -> HealthResponse:
        """healthy: all up; degraded: Redis or the LLM down (the API still answers); unhealthy: database down."""
        dependencies = {"redis": await self.redis(), "llm": await self.llm(), "database": await self.database()}
        # BEGIN SOLUTION TODO 23: unhealthy without the database, degraded when another dependency is down
        if dependencies["database"].status == "down":
            status = "unhealthy"
        elif any(dependency.status == "down" for dependency in dependencies.values()):
            status = "degraded"
        else:
            status = "healthy"
        # BEGIN STARTER
        # status = "healthy"
        # END STARTER
        # END SOLUTION
        return HealthResponse(
            status=status,
            version=self.settings.api_version,
            uptime_seconds=round(time.monotonic() - self.started, 3),
            dependencies=dependencies,
        )

    async def redis(self) -> DependencyStatus:
        url = self.settings.effective_redis_url
        where = "embedded fakeredis" if url == MEMORY_URL or not self.settings.redis_enabled else _safe(url)
        # BEGIN SOLUTION TODO 22: ping Redis and report its latency, or down
        latency = await self.cache.ping()
        if latency is None:
            return DependencyStatus(status="down", detail=f"{where}: no answer to PING")
        return DependencyStatus(status="up", latency_ms=round(latency, 3), detail=where)
        # BEGIN STARTER
        # return DependencyStatus(status="up", detail=where)
        # END STARTER
        # END SOLUTION

    async def database(self) -> DependencyStatus:
        started = time.perf_counter()
        try:
            await database.ping(self.engine)
        except Exception as exc:  # noqa: BLE001 - any failure means the database is not usable
            return DependencyStatus(status="down", detail=f"{self.engine.dialect.name}: {type(exc).__name__}")
        return DependencyStatus(
            status="up", latency_ms=round((time.perf_counter() - started) * 1000, 3), detail=self.engine.dialect.name
        )

    async def llm(self) -> DependencyStatus:
        if self.settings.llm_provider == "offline":
            return DependencyStatus(status="up", detail=f"offline model {self.model_name}")
        now = time.monotonic()
        if self._llm is None or now - self._llm[0] > _PROBE_CACHE_SECONDS:
            self._llm = (now, await self._probe_openai())
        return self._llm[1]

    async def _probe_openai(self) -> DependencyStatus:
        base = (self.settings.openai_base_url or "https://api.openai.com/v1").rstrip("/")
        key = self.settings.openai_api_key
        headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
        started = time.perf_counter()
        try:
            async with httpx.AsyncClient(timeout=_PROBE_SECONDS) as client:
                response = await client.get(f"{base}/models", headers=headers)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return DependencyStatus(status="down", detail=f"openai model {self.model_name}: {type(exc).__name__}")
        latency = round((time.perf_counter() - started) * 1000, 3)
        return DependencyStatus(status="up", latency_ms=latency, detail=f"openai model {self.model_name}")


def _safe(url: str) -> str:
    """The URL without its password."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
