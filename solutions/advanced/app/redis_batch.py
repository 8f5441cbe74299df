"""Script calls that different requests make at the same moment go to Redis together, as one pipeline.

Every Redis command costs the worker a round trip through redis-py and two system calls, about 60
microseconds of CPU here, the same for a tiny command as for a script. The rate limit and the cache read of
every request are script calls, and under load many requests make them in the same turn of the event loop:
sent as one pipeline, they share that cost (PERFORMANCE.md measures both). Each script still runs atomically
on the server, in the order the calls were made; a caller waits only for the batch it is in, and a call
alone in its turn is sent at once, in a batch of one.
"""

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError

Arg = str | bytes | int | float


@dataclass
class _Call:
    script: "BatchedScript"
    keys: Sequence[Arg]
    args: Sequence[Arg]
    result: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class RedisBatch:
    """Collects script calls made in one turn of the event loop and sends them in one pipeline."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._calls: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()

    def register_script(self, source: str) -> "BatchedScript":
        """A script to call through the batch, as redis-py's `register_script` gives one to call alone."""
        return BatchedScript(self, source)

    async def call(self, script: "BatchedScript", keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """The script's reply; raises what Redis (or the connection) raised for it."""
        call = _Call(script, keys, args)
        self._calls.append(call)
        if len(self._calls) == 1:  # the first call of this turn: send the batch once the turn's calls are in
            asyncio.get_running_loop().call_soon(self._send_batch)
        return await call.result

    def _send_batch(self) -> None:
        calls, self._calls = self._calls, []
        task = asyncio.create_task(self._send(calls), name="redis-batch")
        self._sending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._sending.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            replies = await self._execute(calls)
        except Exception as exc:  # noqa: BLE001 - not swallowed: every call of the batch raises it
            for call in calls:
                if not call.result.done():
                    call.result.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the calls
            for call in calls:
                call.result.cancel()
            raise
        for call, reply in zip(calls, replies, strict=True):
            if call.result.done():  # its caller was cancelled; the script ran all the same
                continue
            if isinstance(reply, Exception):
                call.result.set_exception(reply)
            else:
                call.result.set_result(reply)

    async def _execute(self, calls: list[_Call]) -> list[Any]:
        replies = await self._pipeline(calls)
        missing = {call.script for call, reply in zip(calls, replies, strict=True) if isinstance(reply, NoScriptError)}
        if not missing:
            return replies
        # The server forgot its scripts (a restart, SCRIPT FLUSH): load them and send those calls again.
        for script in missing:
            await self.client.script_load(script.source)
        retry = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        for i, reply in zip(retry, await self._pipeline([calls[i] for i in retry]), strict=True):
            replies[i] = reply
        return replies

    async def _pipeline(self, calls: list[_Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


class BatchedScript:
    """A Lua script called through a RedisBatch: `await script(keys=[...], args=[...])`."""

    def __init__(self, batch: RedisBatch, source: str) -> None:
        self.batch = batch
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        return await self.batch.call(self, keys, args)
