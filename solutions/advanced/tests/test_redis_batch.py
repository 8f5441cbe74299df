"""RedisBatch: script calls made together share one round trip, and each gets its own reply."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redis_batch import Arg, RedisBatch, _evalsha
from tests.support.services import RedisServer
from tests.support.stage import free_port

# Returns the key's new value: the order in which the server ran the calls.
NEXT = "return redis.call('INCR', KEYS[1])"
# Keeps the server busy for ARGV[1] seconds (scripts run one at a time), then returns 'done'.
SPIN = (
    "local t = redis.call('TIME') local e = t[1] + t[2] / 1e6 + tonumber(ARGV[1]) "
    "repeat t = redis.call('TIME') until t[1] + t[2] / 1e6 > e return 'done'"
)
FAILS_ON_NEGATIVE = "if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative') end return ARGV[1]"


@asynccontextmanager
async def client_for(kind: str, url: str | None = None) -> AsyncIterator[aioredis.Redis]:
    client: aioredis.Redis = fakeredis.FakeAsyncRedis() if kind == "embedded" else aioredis.Redis.from_url(url or "")
    try:
        yield client
    finally:
        await client.aclose()


async def _calls_in_one_turn_share_one_round_trip(client: aioredis.Redis) -> None:
    batch = RedisBatch(client)
    script = batch.register_script(NEXT)
    try:
        assert await script(keys=["counter"]) == 1  # a call alone is sent at once; the first one loads the script
        before = batch.round_trips
        replies = await asyncio.gather(*(script(keys=["counter"]) for _ in range(20)))
        assert replies == list(range(2, 22))  # each its own reply, in the order of the calls
        assert batch.round_trips - before == 1
    finally:
        await batch.aclose()


@pytest.mark.anyio
async def test_calls_in_one_turn_share_one_round_trip_embedded() -> None:
    async with client_for("embedded") as client:
        await _calls_in_one_turn_share_one_round_trip(client)


@pytest.mark.anyio
@pytest.mark.service
async def test_calls_in_one_turn_share_one_round_trip(redis: RedisServer) -> None:
    async with client_for("real", redis.url) as client:
        await _calls_in_one_turn_share_one_round_trip(client)


@pytest.mark.anyio
@pytest.mark.service
async def test_calls_made_during_a_round_trip_go_together_in_the_next(redis: RedisServer) -> None:
    """While one round trip is on the wire, later calls queue; they leave together once it is back."""
    async with client_for("real", redis.url) as client:
        batch = RedisBatch(client)
        spin, script = batch.register_script(SPIN), batch.register_script(NEXT)
        await client.script_load(SPIN)
        await client.script_load(NEXT)
        try:
            slow = asyncio.ensure_future(spin(args=[0.2]))
            later = []
            for _ in range(5):  # five turns of the event loop, one call each, while the slow script runs
                await asyncio.sleep(0.01)
                later.append(asyncio.ensure_future(script(keys=["counter"])))
            assert await slow == b"done" and await asyncio.gather(*later) == [1, 2, 3, 4, 5]
            assert batch.round_trips == 2
        finally:
            await batch.aclose()


@pytest.mark.anyio
@pytest.mark.service
async def test_an_error_reply_fails_only_its_own_call(redis: RedisServer) -> None:
    async with client_for("real", redis.url) as client:
        batch = RedisBatch(client)
        script = batch.register_script(FAILS_ON_NEGATIVE)
        await client.script_load(FAILS_ON_NEGATIVE)
        replies = await asyncio.gather(*(script(args=[n]) for n in (1, -1, 2)), return_exceptions=True)
        assert replies[0] == b"1" and replies[2] == b"2"
        assert isinstance(replies[1], ResponseError) and "negative" in str(replies[1])
        assert await script(args=[3]) == b"3"  # the connection is still in step with the server
        assert batch.round_trips == 2
        await batch.aclose()


@pytest.mark.anyio
@pytest.mark.service
async def test_scripts_the_server_forgot_are_loaded_again(redis: RedisServer) -> None:
    """After a restart (or SCRIPT FLUSH) the server answers NOSCRIPT: the batch loads its scripts and resends."""
    async with client_for("real", redis.url) as client:
        batch = RedisBatch(client)
        script = batch.register_script(NEXT)
        assert await script(keys=["counter"]) == 1
        await client.script_flush()
        assert await asyncio.gather(*(script(keys=["counter"]) for _ in range(3))) == [2, 3, 4]
        await batch.aclose()


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


@pytest.mark.anyio
@pytest.mark.service
async def test_a_round_trip_that_outlasts_the_timeout_fails_and_the_next_connects_again(redis: RedisServer) -> None:
    """A reply that does not come in time is a redis TimeoutError (a RedisError) for each call of the round trip;
    the late reply must not be read as the answer to a later call."""
    async with client_for("real", redis.url) as client:
        batch = RedisBatch(client, timeout=0.2)
        slow, quick = batch.register_script(SPIN), batch.register_script("return ARGV[1]")
        await client.script_load(slow.source)
        await client.script_load(quick.source)
        failures = await asyncio.gather(slow(args=[0.5]), quick(args=["first"]), return_exceptions=True)
        assert all(isinstance(failure, RedisTimeoutError) for failure in failures), failures
        await asyncio.sleep(0.5)  # the slow script finishes on the server
        assert await quick(args=["second"]) == b"second"
        await batch.aclose()


@pytest.mark.anyio
@pytest.mark.service
async def test_the_batch_reconnects_after_the_server_drops_its_connection(redis: RedisServer) -> None:
    async with client_for("real", redis.url) as client:
        batch = RedisBatch(client)
        script = batch.register_script(NEXT)
        assert await script(keys=["counter"]) == 1
        await client.client_kill_filter(_type="normal", skipme=True)  # every client connection but this one
        outcome = await asyncio.gather(script(keys=["counter"]), return_exceptions=True)
        # The round trip on the dropped connection fails as a RedisError, or (if the drop was seen first) works.
        assert isinstance(outcome[0], RedisError) or outcome[0] == 2, outcome
        assert await script(keys=["counter"]) == (2 if isinstance(outcome[0], RedisError) else 3)
        await batch.aclose()


def test_calls_are_sent_as_redis_py_would_pack_them() -> None:
    """The batch writes its commands itself; byte for byte, they are what redis-py's packer makes."""
    sha = "0" * 40
    keys: list[Arg] = ["counter", "ключ", b"\x00raw"]
    args: list[Arg] = [0, -7, 2**70, 0.1, 1e-9, "text", b"bytes\r\n", ""]
    packer = aioredis.Redis().connection_pool.make_connection()
    assert _evalsha(sha, keys, args) == b"".join(packer.pack_command("EVALSHA", sha, len(keys), *keys, *args))


@pytest.mark.anyio
async def test_an_argument_redis_cannot_take_fails_only_its_own_call() -> None:
    async with client_for("embedded") as client:
        script = RedisBatch(client).register_script(NEXT)
        for wrong in (True, None, [1]):
            replies = await asyncio.gather(
                script(keys=["counter"]), script(keys=["counter"], args=[wrong]), return_exceptions=True
            )
            assert isinstance(replies[1], DataError) and isinstance(replies[0], int), replies
