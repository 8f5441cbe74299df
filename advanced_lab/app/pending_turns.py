"""Cache hits that start a session: their turn recorded in Redis at once, written to the database behind.

Writing a checkpoint and a session row was most of what a cached answer cost, so a hit in a new session
records its turn here in one Redis round trip instead. The turn reaches the database (checkpoint and session
row) when the session is first read (GET, the list, a follow-up question: no reader ever sees it missing), or
from a background loop that works while the worker has no request in flight, and a few turns a second even
when it is never idle. Pending turns are as durable as Redis: a real Redis keeps them across restarts of
the app; with the embedded one (`memory://`) they are all written at shutdown.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from .logging_config import get_logger

logger = get_logger(__name__)

# KEYS: the turn, the owner's set of pending sessions, the queue of sessions to write, how many are pending.
# ARGV: the turn, its session.
_RECORD = """
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
return redis.call('INCR', KEYS[4])
"""
# KEYS: the turn, the owner's set, the count. ARGV: the session. Only the taker that deletes the turn counts it.
_FORGET = """
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('DECR', KEYS[3])
end
return 1
"""


@dataclass(frozen=True)
class PendingTurn:
    """A question answered from the cache in a session that exists nowhere else yet."""

    session_id: str
    owner: str
    question: str
    question_id: str
    answer: str
    at: datetime


class PendingTurns:
    """The pending turns in Redis: one per session, a set per owner, and a queue of sessions to write."""

    def __init__(self, client: redis.Redis, namespace: str = "agent:pending") -> None:
        self.client = client
        self.namespace = namespace
        self._queue = f"{namespace}:queue"
        self._count = f"{namespace}:count"
        self._record = client.register_script(_RECORD)
        self._forget = client.register_script(_FORGET)

    def _turn_key(self, session_id: str) -> str:
        return f"{self.namespace}:turn:{session_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self.namespace}:owner:{owner}"

    async def record(self, turn: PendingTurn) -> None:
        """Keep the turn until it is written; raises RedisError if Redis cannot take it."""
        keys = [self._turn_key(turn.session_id), self._owner_key(turn.owner), self._queue, self._count]
        # vars(), not dataclasses.asdict(): that deep-copies every field, a measurable cost on the hot path.
        await self._record(keys=keys, args=[orjson.dumps(vars(turn)), turn.session_id])

    async def get(self, session_id: str) -> PendingTurn | None:
        """The session's pending turn, if it has one."""
        raw = await self.client.get(self._turn_key(session_id))
        if raw is None:
            return None
        fields = orjson.loads(raw)
        return PendingTurn(**{**fields, "at": datetime.fromisoformat(fields["at"])})

    async def of_owner(self, owner: str) -> list[str]:
        """The owner's sessions that still have a pending turn."""
        return sorted(_text(member) for member in await self.client.smembers(self._owner_key(owner)))

    async def forget(self, turn: PendingTurn) -> None:
        """Drop a turn that has been written to the database (once, however many wrote it)."""
        keys = [self._turn_key(turn.session_id), self._owner_key(turn.owner), self._count]
        await self._forget(keys=keys, args=[turn.session_id])

    async def count(self) -> int:
        """How many sessions have a pending turn (and no row in the database yet)."""
        return int(await self.client.get(self._count) or 0)

    async def all_sessions(self) -> list[str]:
        """Every session with a pending turn, queued or not (a walk over the keys: at start and shutdown only)."""
        prefix = self._turn_key("")
        return [_text(key)[len(prefix) :] async for key in self.client.scan_iter(match=f"{prefix}*", count=1000)]

    async def requeue(self, sessions: list[str]) -> None:
        """Queue sessions again (a session queued twice is written once: the second taker finds nothing)."""
        if sessions:
            await self.client.rpush(self._queue, *sessions)

    async def next_sessions(self, count: int) -> list[str]:
        """Take up to `count` sessions off the queue (each goes to one taker, in any worker)."""
        taken = await self.client.lpop(self._queue, count)
        return [_text(member) for member in cast(list[bytes] | None, taken) or []]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


Fold = Callable[[str], Awaitable[object]]


async def write_behind(
    pending: PendingTurns,
    fold: Fold,
    idle: Callable[[], bool],
    stop: asyncio.Event,
    *,
    interval: float = 0.05,
    per_second: int = 5,
) -> None:
    """Write queued turns: the whole queue while the worker is idle, `per_second` a second when it is busy.

    Runs until `stop` is set, and never stops in the middle of a turn: a cancelled write could leave the
    session's lock taken. A turn taken off the queue and not written (a crash, Redis down) is not lost: it
    stays pending and is written when its session is next read, or at shutdown.
    """
    budget = 0.0
    while not stop.is_set():
        await asyncio.sleep(interval)  # not wait_for(stop.wait()): a task per tick costs more than the tick
        budget = min(budget + interval * per_second, float(per_second))
        while not stop.is_set() and (idle() or budget >= 1):
            try:
                sessions = await pending.next_sessions(20 if idle() else 1)
            except RedisError as exc:
                logger.warning("pending turns unreachable", error=type(exc).__name__)
                break
            if not sessions:
                break
            for session_id in sessions:
                budget = max(budget - 1, 0.0)
                await _fold_logged(fold, session_id)


async def drain(pending: PendingTurns, fold: Fold) -> int:
    """Write every pending turn now (at shutdown), queued or not; how many there were."""
    sessions: set[str] = set()
    try:
        while taken := await pending.next_sessions(100):
            sessions.update(taken)
        sessions.update(await pending.all_sessions())
    except RedisError as exc:
        logger.warning("pending turns unreachable at shutdown", error=type(exc).__name__)
    for session_id in sorted(sessions):
        await _fold_logged(fold, session_id)
    return len(sessions)


@asynccontextmanager
async def writing_behind(
    pending: PendingTurns, fold: Fold, idle: Callable[[], bool], *, embedded: bool
) -> AsyncIterator[None]:
    """Run `write_behind` for the application's life.

    An embedded Redis dies with the process, so whatever is pending is written at shutdown. A real one keeps
    pending turns across restarts; a crash can leave some off the queue, so they are queued again at start.
    """
    if not embedded:
        with contextlib.suppress(RedisError):
            await pending.requeue(orphans := await pending.all_sessions())
            if orphans:
                logger.info("pending turns queued again at start", sessions=len(orphans))
    stop = asyncio.Event()
    task = asyncio.create_task(write_behind(pending, fold, idle, stop), name="pending-turns")
    try:
        yield
    finally:
        stop.set()
        await task
        if embedded and (written := await drain(pending, fold)):
            logger.info("pending turns written at shutdown", sessions=written)


async def _fold_logged(fold: Fold, session_id: str) -> None:
    try:
        await fold(session_id)
    except Exception:
        logger.exception("pending turn not written; it stays pending", session_id=session_id)
