"""The cache: CacheService on real Redis and fakeredis, and response caching of /api/v1/query."""

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient

from app.cache import CacheService, create_redis
from app.main import create_app
from tests.support.services import RedisServer

from .conftest import login, make_settings, metric_value

pytestmark = pytest.mark.anyio


async def _exercise(cache: CacheService) -> None:
    assert await cache.set(cache.key("a"), {"n": 1, "s": "é"})
    assert await cache.get(cache.key("a")) == {"n": 1, "s": "é"}
    assert await cache.get(cache.key("missing")) is None
    for index in range(1200):
        await cache.set(cache.key("bulk", str(index)), index)
    assert await cache.clear_pattern(cache.key("bulk", "*")) == 1200
    assert await cache.get(cache.key("bulk", "7")) is None
    assert await cache.delete(cache.key("a")) == 1


async def test_cache_service_on_real_redis(redis: RedisServer) -> None:
    """get/set/delete/clear_pattern (SCAN in batches) round-trip JSON on a real redis-server."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        await _exercise(CacheService(client, default_ttl=60))
    finally:
        await client.aclose()


async def test_cache_service_on_fakeredis(tmp_path: Path) -> None:
    """The same behaviour on the embedded fakeredis (REDIS_URL=memory://)."""
    client = create_redis(make_settings(tmp_path / "x.db"))
    await _exercise(CacheService(client, default_ttl=60))


async def test_ttl_expires_values(redis: RedisServer) -> None:
    """A value set with a 1 s TTL is gone after it."""
    client = aioredis.Redis.from_url(redis.url)
    cache = CacheService(client, default_ttl=60)
    try:
        await cache.set("k", 1, ttl=1)
        assert 0 < await client.ttl("k") <= 1
        await asyncio.sleep(1.2)
        assert await cache.get("k") is None
    finally:
        await client.aclose()


async def test_redis_down_is_a_miss_not_an_error(redis: RedisServer) -> None:
    """With the server stopped, reads miss and writes report False; nothing raises."""
    client = aioredis.Redis.from_url(redis.url, socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = CacheService(client, default_ttl=60)
    redis.stop()
    try:
        assert await cache.get("k") is None
        assert await cache.set("k", 1) is False
        assert await cache.delete("k") == 0
        assert await cache.clear_pattern("*") == 0
        assert await cache.ping() is None
    finally:
        await client.aclose()


def _runs(client: TestClient) -> float:
    return metric_value(client.get("/api/v1/metrics").text, "agent_executions_total", status="success")


def test_query_miss_then_hit_without_running_the_agent(client: TestClient) -> None:
    """The same question twice: MISS runs the agent, HIT does not, and says so in header and metadata."""
    headers = login(client)
    first = client.post("/api/v1/query", json={"query": "What is 12 * 7?"}, headers=headers)
    runs = _runs(client)
    second = client.post("/api/v1/query", json={"query": "  what is 12 *   7?"}, headers=headers)
    assert first.headers["X-Cache"] == "MISS"
    assert first.json()["metadata"]["cached"] is False
    assert second.headers["X-Cache"] == "HIT"
    assert second.json()["metadata"]["cached"] is True
    assert second.json()["response"] == first.json()["response"]
    assert _runs(client) == runs
    # The hit is recorded in its own session like any answer.
    sid = second.json()["session_id"]
    assert client.get(f"/api/v1/session/{sid}", headers=headers).json()["message_count"] == 2


def test_cache_key_covers_the_conversation(client: TestClient) -> None:
    """The same question in sessions with different histories is answered for each context."""
    headers = login(client)
    ada = client.post("/api/v1/query", json={"query": "my name is Ada"}, headers=headers).json()["session_id"]
    bob = client.post("/api/v1/query", json={"query": "my name is Bob"}, headers=headers).json()["session_id"]
    answer_ada = client.post("/api/v1/query", json={"query": "what is my name?", "session_id": ada}, headers=headers)
    answer_bob = client.post("/api/v1/query", json={"query": "what is my name?", "session_id": bob}, headers=headers)
    assert answer_ada.json()["response"] == "Your name is Ada."
    assert answer_bob.headers["X-Cache"] == "MISS"
    assert answer_bob.json()["response"] == "Your name is Bob."


def test_max_iterations_is_part_of_the_key(client: TestClient) -> None:
    """A different step budget is a different answer."""
    headers = login(client)
    client.post("/api/v1/query", json={"query": "What is 2 + 2?"}, headers=headers)
    other = client.post("/api/v1/query", json={"query": "What is 2 + 2?", "max_iterations": 2}, headers=headers)
    assert other.headers["X-Cache"] == "MISS"


def test_streams_and_disabled_cache_bypass(tmp_path: Path) -> None:
    """Streams are never cached, and CACHE_ENABLED=false bypasses the cache."""
    with TestClient(create_app(make_settings(tmp_path / "a.db", cache_enabled=False))) as client:
        headers = login(client)
        for _ in range(2):
            response = client.post("/api/v1/query", json={"query": "What is 1 + 1?"}, headers=headers)
            assert response.headers["X-Cache"] == "BYPASS"
            assert response.json()["metadata"]["cached"] is False
        stream = client.post("/api/v1/query", json={"query": "hi", "stream": True}, headers=headers)
        assert stream.headers["X-Cache"] == "BYPASS"


def test_cache_hits_and_misses_are_counted(client: TestClient) -> None:
    """cache_hits_total and cache_misses_total move with each lookup."""
    headers = login(client)
    for _ in range(3):
        client.post("/api/v1/query", json={"query": "What is 5 * 5?"}, headers=headers)
    text = client.get("/api/v1/metrics").text
    assert metric_value(text, "cache_misses_total") == 1
    assert metric_value(text, "cache_hits_total") == 2


def test_query_works_with_redis_down(tmp_path: Path, redis: RedisServer) -> None:
    """With Redis stopped: no 5xx, the answer comes from the agent, health says degraded."""
    settings = make_settings(tmp_path / "r.db", redis_url=redis.url)
    with TestClient(create_app(settings)) as client:
        headers = login(client)
        assert client.get("/health").json()["status"] == "healthy"
        redis.stop()
        response = client.post("/api/v1/query", json={"query": "What is 3 * 3?"}, headers=headers)
        assert response.status_code == 200
        assert response.headers["X-Cache"] == "MISS"
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        assert health.json()["dependencies"]["redis"]["status"] == "down"
        redis.restart()
        assert client.get("/health").json()["status"] == "healthy"
        again = client.post("/api/v1/query", json={"query": "What is 4 * 4?"}, headers=headers)
        assert again.headers["X-Cache"] == "MISS"
        assert (
            client.post("/api/v1/query", json={"query": "What is 4 * 4?"}, headers=headers).headers["X-Cache"] == "HIT"
        )
