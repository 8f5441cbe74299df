"""Cache hits that start a session: their turn recorded in Redis at once, written to the database behind.

Writing a checkpoint and a session row was most of what a cached answer cost, so a hit in a new session
records its turn here instead, in the same round trip that reads the cached answer (`record_on_hit`). The
turn reaches the database (checkpoint and session row) when the session is first read (GET, the list, a
follow-up question: no reader ever sees it missing), or from a background loop that works while the worker
has no request in flight, and a few turns a second even when it is never idle. Pending turns are as durable
as Redis: a real Redis keeps them across restarts of the app; with the embedded one (`memory://`) they are
all written at shutdown.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from .logging_config import get_logger
from .redis_batch import RedisBatch

logger = get_logger(__name__)

# A turn is a hash: `turn`, its fields as JSON, and `answer`, the value cached under the question (a JSON object
# with a `response`). KEYS: the turn, the owner's set of pending sessions, the queue of sessions to write, how
# many are pending, the cached answer. ARGV: the turn's fields, its session. Nothing is recorded without a
# cached answer; the cached value is returned.
_RECORD_ON_HIT = """
local answer = redis.call('GET', KEYS[5])
if not answer then return false end
redis.call('HSET', KEYS[1], 'turn', ARGV[1], 'answer', answer)
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('INCR', KEYS[4])
return answer
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

    def __init__(self, client: redis.Redis, namespace: str = "agent:pending", batch: RedisBatch | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self._queue = f"{namespace}:queue"
        self._count = f"{namespace}:count"
        self._record_on_hit = (batch or client).register_script(_RECORD_ON_HIT)  # a request's: batched
        self._forget = client.register_script(_FORGET)

    def _turn_key(self, session_id: str) -> str:
        return f"{self.namespace}:turn:{session_id}"

    def _owner_key(self, owner: str) -> str:
        return f"{self.namespace}:owner:{owner}"

    async def record_on_hit(
        self, cache_key: str, *, session_id: str, owner: str, question: str, question_id: str
    ) -> bytes | None:
        """The value cached under cache_key, and if there is one, the session's first turn recorded with it as
        the answer, in one round trip; None (nothing recorded) on a miss. Raises RedisError."""
        turn = {"session_id": session_id, "owner": owner, "question": question, "question_id": question_id}
        fields = orjson.dumps({**turn, "at": datetime.now(UTC)})
        keys = [self._turn_key(session_id), self._owner_key(owner), self._queue, self._count, cache_key]
        cached: bytes | None = await self._record_on_hit(keys=keys, args=[fields, session_id])
        return cached

    async def get(self, session_id: str) -> PendingTurn | None:
        """The session's pending turn, if it has one."""
        raw, answer = await self.client.hmget(self._turn_key(session_id), ["turn", "answer"])
        if raw is None or answer is None:
            return None
        fields = orjson.loads(raw)
        at = datetime.fromisoformat(fields.pop("at"))
        return PendingTurn(**fields, answer=str(orjson.loads(answer)["response"]), at=at)

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
    longest: float = 1.0,
    per_second: int = 5,
) -> None:
    """Write queued turns: the whole queue while the worker is idle, `per_second` a second when it is busy.

    It looks every `interval` seconds while there are turns to write; each look that finds the queue empty,
    or Redis unreachable, doubles the wait, up to `longest`, so an idle worker neither asks Redis nor wakes up
    20 times a second, and a Redis that is down is not asked (nor logged about) 20 times a second either.
    Runs until `stop` is set, and never stops in the middle of a turn: a cancelled write could leave the
    session's lock taken. A turn taken off the queue and not written (a crash, Redis down) is not lost: it
    stays pending and is written when its session is next read, or at shutdown.
    """
    budget, wait = 0.0, interval
    unreachable = False  # the last look failed: said once, not at every look until Redis is back
    # One task for the whole loop: each tick waits on it with a timeout (no task per tick), and stop ends the wait.
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            await asyncio.wait((stopped,), timeout=wait)
            budget = min(budget + wait * per_second, float(per_second))
            found: bool | None = None  # None: the queue was not looked at (a busy worker without budget)
            while not stop.is_set() and (idle() or budget >= 1):
                try:
                    sessions = await pending.next_sessions(20 if idle() else 1)
                except RedisError as exc:
                    if not unreachable:
                        logger.warning("pending turns unreachable; looking again less often", error=type(exc).__name__)
                    unreachable, found = True, False  # backs off as from an empty queue
                    break
                if unreachable:
                    unreachable = False
                    logger.info("pending turns reachable again")
                found = bool(sessions) or bool(found)
                if not sessions:
                    break
                for session_id in sessions:
                    budget = max(budget - 1, 0.0)
                    await _fold_logged(fold, session_id)
            if found is not None:
                wait = interval if found else min(wait * 2, longest)
    finally:
        stopped.cancel()


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
