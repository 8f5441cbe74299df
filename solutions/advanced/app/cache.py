"""Redis access: the client factory (real server or embedded fakeredis) and CacheService for JSON values."""

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as redis
from redis.driver_info import DriverInfo
from redis.exceptions import RedisError

from .config import Settings
from .logging_config import get_logger

logger = get_logger(__name__)
CacheRead = Callable[[str], Awaitable[bytes | None]]  # fetches the raw value of a key
MEMORY_URL = "memory://"


def create_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the settings' URL; `memory://` (or REDIS_ENABLED=false) gives an embedded fakeredis.

    Nothing connects here: a real client connects on its first command.
    """
    url = settings.effective_redis_url
    if url == MEMORY_URL or not settings.redis_enabled:
        import fakeredis

        client: redis.Redis = fakeredis.FakeAsyncRedis()
        return client
    # Short timeouts: a Redis that is down must cost a request milliseconds, not seconds. The driver info made
    # once: by default each new connection reads redis-py's version from the installed package's metadata,
    # 0.7 ms of CPU each while a burst of requests grows the pool.
    return redis.Redis.from_url(
        url, socket_connect_timeout=0.5, socket_timeout=1.0, health_check_interval=30, driver_info=DriverInfo()
    )


class CacheService:
    """JSON values in Redis with a TTL; every failure is a cache miss and a warning, never an error."""

    def __init__(self, client: redis.Redis, *, default_ttl: int, namespace: str = "agent") -> None:
        self.client = client
        self.default_ttl = default_ttl
        self.namespace = namespace

    def key(self, *parts: str) -> str:
        """A namespaced key: `agent:part:part`."""
        return ":".join((self.namespace, *parts))

    async def get(self, key: str, read: CacheRead | None = None) -> Any | None:
        """The value stored under key, or None when missing, unreadable or Redis is down.

        `read` fetches the raw value instead of a plain GET: a script that also writes something when the key
        is there, in the same round trip (see Conversations.first_turn_reader).
        """
        # BEGIN SOLUTION TODO 5: read a JSON value, treating a Redis failure as a miss
        try:
            raw = await (read or self.client.get)(key)
        except RedisError as exc:
            logger.warning("cache unavailable", operation="get", error=type(exc).__name__)
            return None
        if raw is None:
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            logger.warning("cache value is not JSON", key=key)
            return None
        # BEGIN STARTER
        # return None
        # END STARTER
        # END SOLUTION

    async def set(self, key: str, value: Any, ttl: int | None = None) -> bool:
        """Store a JSON-serialisable value for ttl seconds (the default TTL if None); False if not stored."""
        # BEGIN SOLUTION TODO 6: store a JSON value with a TTL, treating a Redis failure as not stored
        try:
            await self.client.set(key, orjson.dumps(value, default=str), ex=ttl or self.default_ttl)
        except RedisError as exc:
            logger.warning("cache unavailable", operation="set", error=type(exc).__name__)
            return False
        return True
        # BEGIN STARTER
        # return False
        # END STARTER
        # END SOLUTION

    async def delete(self, *keys: str) -> int:
        """Delete keys; how many existed (0 when Redis is down)."""
        try:
            return int(await self.client.delete(*keys)) if keys else 0
        except RedisError as exc:
            logger.warning("cache unavailable", operation="delete", error=type(exc).__name__)
            return 0

    async def clear_pattern(self, pattern: str, batch: int = 500) -> int:
        """Delete every key matching a glob pattern, walking with SCAN (never KEYS, which blocks Redis)."""
        removed = 0
        try:
            keys: list[Any] = []
            async for key in self.client.scan_iter(match=pattern, count=batch):
                keys.append(key)
                if len(keys) >= batch:
                    removed += int(await self.client.delete(*keys))
                    keys.clear()
            if keys:
                removed += int(await self.client.delete(*keys))
        except RedisError as exc:
            logger.warning("cache unavailable", operation="clear_pattern", error=type(exc).__name__)
        return removed

    async def ping(self) -> float | None:
        """Round-trip time to Redis in milliseconds, or None when it does not answer."""
        started = time.perf_counter()
        try:
            await self.client.ping()
        except RedisError:
            return None
        return (time.perf_counter() - started) * 1000


def response_cache_key(
    cache: CacheService, *, query: str, max_iterations: int, provider: str, model: str, history: Sequence[str]
) -> str:
    """A key covering everything an answer depends on, so a cached answer never ignores context."""
    # BEGIN SOLUTION TODO 7: a key covering the normalised query, max_iterations, provider, model and the conversation
    normalised = " ".join(query.lower().split())
    material = orjson.dumps([normalised, max_iterations, provider, model, list(history)])
    # BEGIN STARTER
    # material = query.encode()
    # END STARTER
    # END SOLUTION
    return cache.key("response", hashlib.sha256(material).hexdigest())
