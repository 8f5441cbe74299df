"""RedisBatch: script calls made in one turn of the event loop share one pipeline, and each gets its own reply."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.redis_batch import RedisBatch
from tests.support.services import RedisServer
from tests.support.stage import free_port

# Returns the key's new value: the order in which the server ran the calls.
NEXT = "return redis.call('INCR', KEYS[1])"
FAILS_ON_NEGATIVE = "if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative') end return ARGV[1]"


class CountingPipelines:
    """Counts the pipelines redis-py's client opens (the round trips a batch makes)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.opened = 0
        original: Callable[..., Any] = client.pipeline

        def pipeline(*args: Any, **kwargs: Any) -> Any:
            self.opened += 1
            return original(*args, **kwargs)

        client.pipeline = pipeline  # type: ignore[method-assign]


@asynccontextmanager
async def client_for(kind: str, url: str | None = None) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = fakeredis.FakeAsyncRedis() if kind == "embedded" else aioredis.Redis.from_url(url or "")
    try:
        yield client
    finally:
        await client.aclose()


async def _calls_in_one_turn_share_one_pipeline(client: aioredis.Redis) -> None:
    script = RedisBatch(client).register_script(NEXT)
    assert await script(keys=["counter"]) == 1  # a call alone is sent at once; the first one loads the script
    pipelines = CountingPipelines(client)
    replies = await asyncio.gather(*(script(keys=["counter"]) for _ in range(20)))
    assert replies == list(range(2, 22))  # each its own reply, in the order of the calls
    assert pipelines.opened == 1


@pytest.mark.anyio
async def test_calls_in_one_turn_share_one_pipeline_embedded() -> None:
    async with client_for("embedded") as client:
        await _calls_in_one_turn_share_one_pipeline(client)


@pytest.mark.anyio
@pytest.mark.service
async def test_calls_in_one_turn_share_one_pipeline(redis: RedisServer) -> None:
    async with client_for("real", redis.url) as client:
        await _calls_in_one_turn_share_one_pipeline(client)


@pytest.mark.anyio
@pytest.mark.service
async def test_an_error_reply_fails_only_its_own_call(redis: RedisServer) -> None:
    async with client_for("real", redis.url) as client:
        script = RedisBatch(client).register_script(FAILS_ON_NEGATIVE)
        replies = await asyncio.gather(*(script(args=[n]) for n in (1, -1, 2)), return_exceptions=True)
        assert replies[0] == b"1" and replies[2] == b"2"
        assert isinstance(replies[1], ResponseError) and "negative" in str(replies[1])


@pytest.mark.anyio
@pytest.mark.service
async def test_scripts_the_server_forgot_are_loaded_again(redis: RedisServer) -> None:
    """After a restart (or SCRIPT FLUSH) the server answers NOSCRIPT: the batch loads its scripts and resends."""
    async with client_for("real", redis.url) as client:
        script = RedisBatch(client).register_script(NEXT)
        assert await script(keys=["counter"]) == 1
        await client.script_flush()
        assert await asyncio.gather(*(script(keys=["counter"]) for _ in range(3))) == [2, 3, 4]


@pytest.mark.anyio
async def test_a_cancelled_caller_leaves_the_others_their_replies() -> None:
    async with client_for("embedded") as client:
        script = RedisBatch(client).register_script(NEXT)
        calls = [asyncio.ensure_future(script(keys=["counter"])) for _ in range(3)]
        await asyncio.sleep(0)  # the calls are queued in this turn
        calls[1].cancel()
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert done[0] == 1 and done[2] == 3 and isinstance(done[1], asyncio.CancelledError)
        assert int(await client.get("counter") or 0) == 3  # the cancelled call's script ran all the same


@pytest.mark.anyio
async def test_every_call_of_a_batch_fails_when_redis_is_down() -> None:
    client = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    try:
        script = RedisBatch(client).register_script(NEXT)
        failures = await asyncio.gather(*(script(keys=["counter"]) for _ in range(3)), return_exceptions=True)
        # A ConnectionError, the RedisError the limiter and the cache catch, for every call of the batch.
        assert all(isinstance(failure, RedisConnectionError) for failure in failures), failures
    finally:
        await client.aclose()
