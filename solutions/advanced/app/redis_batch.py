"""Script calls that different requests make at the same moment go to Redis together, in one round trip.

Every Redis command sent through redis-py's client costs the worker about 60 microseconds of CPU here: the
pool, a timeout task for the write, a timeout for the read, two system calls. The rate limit and the cache
read of every request are script calls, and under load many requests make them at about the same moment.
The batch sends them on one connection of its own, as one write, and reads the replies in order: whatever
calls were made while a round trip was on the wire go out together in the next one (PERFORMANCE.md measures
it). Each script still runs atomically on the server, in the order the calls were made; a call made when
nothing is on the wire is sent at the end of the event loop's turn, with whatever else that turn called.
"""

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import DataError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | bytes | int | float


class _Call:
    """One script call: its command, packed when it is made (a bad argument fails that call alone), and the
    future its caller waits on."""

    __slots__ = ("command", "result", "script")

    def __init__(self, script: "BatchedScript", keys: Sequence[Arg], args: Sequence[Arg]) -> None:
        self.script = script
        self.command = _evalsha(script.sha, keys, args)
        self.result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class RedisBatch:
    """Sends the script calls made while it was busy in one round trip, on a connection of its own.

    `timeout` bounds each round trip (default: the client's socket timeout); when it passes, or the connection
    fails, every call of that round trip raises the RedisError redis-py would have raised, and the next round
    trip connects again.
    """

    def __init__(self, client: redis.Redis, *, timeout: float | None = None) -> None:
        self.client = client
        pool = client.connection_pool
        self.timeout = timeout if timeout is not None else pool.connection_kwargs.get("socket_timeout")
        # The round trip is bounded as a whole, so the connection itself needs no timeout per read and write.
        self._connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
        self._calls: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None
        self.round_trips = 0

    def register_script(self, source: str) -> "BatchedScript":
        """A script to call through the batch, as redis-py's `register_script` gives one to call alone."""
        return BatchedScript(self, source)

    async def call(self, script: "BatchedScript", keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """The script's reply; raises what Redis (or the connection) raised for it."""
        call = _Call(script, keys, args)
        self._calls.append(call)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_while_called(), name="redis-batch")
        return await call.result

    async def aclose(self) -> None:
        """Close the batch's connection (at shutdown); a later call connects again."""
        await self._connection.disconnect()

    async def _send_while_called(self) -> None:
        try:
            while self._calls:
                calls, self._calls = self._calls, []
                try:
                    replies = await self._execute(calls)
                except Exception as exc:  # noqa: BLE001 - not swallowed: every call of the round trip raises it
                    for call in calls:
                        if not call.result.done():
                            call.result.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the loop is closing): so are the calls, queued or sent
                    for call in (*calls, *self._calls):
                        call.result.cancel()
                    raise
                for call, reply in zip(calls, replies, strict=True):
                    if call.result.done():  # its caller was cancelled; the script ran all the same
                        continue
                    if isinstance(reply, Exception):
                        call.result.set_exception(reply)
                    else:
                        call.result.set_result(reply)
        finally:
            self._sender = None

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        replies = await self._round_trip(calls)
        missing = {call.script for call, reply in zip(calls, replies, strict=True) if isinstance(reply, NoScriptError)}
        if not missing:
            return replies
        # The server forgot its scripts (a restart, SCRIPT FLUSH): load them and send those calls again.
        for script in missing:
            await self.client.script_load(script.source)
        retry = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        for i, reply in zip(retry, await self._round_trip([calls[i] for i in retry]), strict=True):
            replies[i] = reply
        return replies

    async def _round_trip(self, calls: list[_Call]) -> list[Any]:
        """Send the calls as one write and read one reply each; an error reply is that call's exception."""
        connection = self._connection
        self.round_trips += 1
        commands = b"".join(call.command for call in calls)
        try:
            async with asyncio.timeout(self.timeout):
                await connection.send_packed_command(commands, check_health=False)
                replies: list[Any] = []
                for _ in calls:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
        except TimeoutError:
            # Replies may still be on their way: the connection cannot be trusted to be in step any more.
            await connection.disconnect(nowait=True)
            raise RedisTimeoutError(f"no reply from Redis within {self.timeout} s") from None
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        return replies


def _evalsha(sha: str, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    """EVALSHA as a Redis command (RESP: an array of bulk strings), as redis-py would pack it, in a third of
    the time: its packer is general, these are only strings and numbers."""
    parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *map(_bulk, keys), *map(_bulk, args)]
    return b"*%d\r\n%b" % (len(parts), b"".join(b"$%d\r\n%b\r\n" % (len(part), part) for part in parts))


def _bulk(value: Arg) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    raise DataError(f"Invalid input of type {type(value).__name__}: a script takes bytes, strings and numbers")


class BatchedScript:
    """A Lua script called through a RedisBatch: `await script(keys=[...], args=[...])`."""

    def __init__(self, batch: RedisBatch, source: str) -> None:
        self.batch = batch
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return await self.batch.call(self, keys, args)
