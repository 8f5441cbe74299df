"""Rate limiting: a sliding window in Redis, exact under concurrency, shared by instances, fail-open."""

import asyncio
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from fastapi.testclient import TestClient

from app.main import create_app
from app.rate_limit import RateLimiter
from tests.support.services import RedisServer

from .conftest import login, make_settings

pytestmark = pytest.mark.anyio


async def test_burst_admits_exactly_the_limit(redis: RedisServer) -> None:
    """100 concurrent hits against a limit of 10 admit exactly 10: the Lua script is atomic."""
    client = aioredis.Redis.from_url(redis.url)
    limiter = RateLimiter(client, limit=10, window=60)
    try:
        decisions = await asyncio.gather(*(limiter.hit("user:burst") for _ in range(100)))
    finally:
        await client.aclose()
    assert sum(d.allowed for d in decisions) == 10
    assert sorted(d.remaining for d in decisions if d.allowed) == list(range(10))
    refused = [d for d in decisions if not d.allowed]
    assert all(d.headers()["Retry-After"] == str(d.reset_seconds) for d in refused)
    assert all(1 <= d.reset_seconds <= 60 for d in refused)


async def test_window_slides(redis: RedisServer) -> None:
    """After the window passes, requests are admitted again."""
    client = aioredis.Redis.from_url(redis.url)
    limiter = RateLimiter(client, limit=2, window=1)
    try:
        assert [(await limiter.hit("ip:x")).allowed for _ in range(3)] == [True, True, False]
        await asyncio.sleep(1.1)
        assert (await limiter.hit("ip:x")).allowed
    finally:
        await client.aclose()


async def test_two_instances_share_one_limit(tmp_path: Path, redis: RedisServer) -> None:
    """Two app instances on one Redis admit the limit in total, not each."""
    settings = make_settings(tmp_path / "s.db", redis_url=redis.url, rate_limit_requests=6, rate_limit_window=60)
    first, second = create_app(settings), create_app(settings)
    async with LifespanManager(first), LifespanManager(second):
        clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") for app in (first, second)
        ]
        try:
            replies = await asyncio.gather(*(clients[i % 2].get("/api/v1/sessions") for i in range(20)))
        finally:
            for client in clients:
                await client.aclose()
    statuses = [reply.status_code for reply in replies]
    # Unauthenticated, so each admitted request is a 401 from the route; refused ones are 429.
    assert statuses.count(429) == 14
    assert statuses.count(401) == 6


def test_headers_429_body_and_exempt_paths(tmp_path: Path) -> None:
    """Limited routes carry X-RateLimit-*; the 429 is an ErrorResponse with Retry-After; some paths are free."""
    with TestClient(create_app(make_settings(tmp_path / "h.db", rate_limit_requests=3))) as client:
        headers = login(client)  # the login is limited too (by address)
        first = client.get("/api/v1/sessions", headers=headers)
        assert first.headers["X-RateLimit-Limit"] == "3"
        assert first.headers["X-RateLimit-Remaining"] == "2"  # per user now, not per address
        assert 1 <= int(first.headers["X-RateLimit-Reset"]) <= 60
        client.get("/api/v1/sessions", headers=headers)
        client.get("/api/v1/sessions", headers=headers)
        refused = client.get("/api/v1/sessions", headers=headers)
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited"
        assert refused.json()["request_id"] == refused.headers["X-Request-ID"]
        assert int(refused.headers["Retry-After"]) >= 1
        for path in ("/", "/health", "/docs", "/openapi.json", "/api/v1/metrics"):
            assert all(client.get(path).status_code == 200 for _ in range(5)), path
            assert "X-RateLimit-Limit" not in client.get(path).headers


def test_limits_are_per_user(tmp_path: Path) -> None:
    """One user's exhausted window does not limit another user."""
    with TestClient(create_app(make_settings(tmp_path / "u.db", rate_limit_requests=4))) as client:
        demo = login(client, "demo")
        alice = login(client, "alice")
        for _ in range(4):
            client.get("/api/v1/sessions", headers=demo)
        assert client.get("/api/v1/sessions", headers=demo).status_code == 429
        assert client.get("/api/v1/sessions", headers=alice).status_code == 200


def test_redis_down_fails_open(tmp_path: Path, redis: RedisServer) -> None:
    """With Redis stopped the limiter lets requests through (and health says degraded)."""
    settings = make_settings(tmp_path / "d.db", redis_url=redis.url, rate_limit_requests=2)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        redis.stop()
        statuses = [client.get("/api/v1/sessions", headers=headers).status_code for _ in range(5)]
        assert statuses == [200] * 5
        assert client.get("/health").json()["status"] == "degraded"
