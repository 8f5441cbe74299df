"""Session bookkeeping in the database, and the lock that makes turns of one session take turns.

The messages live in the LangGraph checkpointer (the same database); this store keeps who owns each session,
when it started and changed, and how many messages it holds.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis.asyncio as redis
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .database import SessionRow, utcnow
from .logging_config import get_logger

logger = get_logger(__name__)


@dataclass
class _LocalLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(frozen=True)
class SessionRecord:
    """What the API reports about a session besides its messages."""

    session_id: str
    owner: str
    created_at: datetime
    updated_at: datetime
    message_count: int


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _record(row: SessionRow) -> SessionRecord:
    return SessionRecord(row.session_id, row.owner, _aware(row.created_at), _aware(row.updated_at), row.message_count)


class SessionStore:
    """Session metadata in the database; a per-session lock in this process and, when shared, in Redis."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], redis_client: redis.Redis, lock_seconds: float
    ) -> None:
        self._db = sessions
        self._redis = redis_client
        self._lock_seconds = lock_seconds
        self._local: dict[str, _LocalLock] = {}

    @asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        """Hold the session for one turn, against this process's other requests and other instances'."""
        local = self._local.setdefault(session_id, _LocalLock())
        local.users += 1
        try:
            async with local.lock, self._shared_lock(session_id):
                yield
        finally:
            local.users -= 1
            if local.users == 0:
                del self._local[session_id]

    @asynccontextmanager
    async def _shared_lock(self, session_id: str) -> AsyncIterator[None]:
        shared = self._redis.lock(
            f"agent:lock:session:{session_id}", timeout=self._lock_seconds, blocking_timeout=self._lock_seconds
        )
        try:
            acquired = bool(await shared.acquire())
        except RedisError as exc:
            logger.warning("session lock without Redis", error=type(exc).__name__)
            acquired = False
        try:
            yield
        finally:
            if acquired:
                try:
                    await shared.release()
                except RedisError as exc:
                    logger.warning("session lock release failed", error=type(exc).__name__)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's record, whoever owns it, or None."""
        async with self._db() as db:
            row = await db.get(SessionRow, session_id)
        return None if row is None else _record(row)

    async def record_turn(
        self, session_id: str, owner: str, message_count: int, *, at: datetime | None = None
    ) -> SessionRecord:
        """Note a turn finished now (or `at`), creating the session on its first."""
        now = at or utcnow()
        async with self._db.begin() as db:
            row = await db.get(SessionRow, session_id, with_for_update=True)
            if row is None:
                row = SessionRow(session_id=session_id, owner=owner, created_at=now)
                db.add(row)
            row.updated_at, row.message_count = now, message_count
        return _record(row)

    async def list(self, owner: str) -> list[SessionRecord]:
        """The owner's sessions, the most recently active first."""
        # TODO 15: list only the caller's own sessions
        query = select(SessionRow).order_by(SessionRow.updated_at.desc())
        async with self._db() as db:
            return [_record(row) for row in (await db.scalars(query)).all()]

    async def delete(self, session_id: str) -> bool:
        """Forget a session; False if there was none."""
        async with self._db.begin() as db:
            result = await db.execute(delete(SessionRow).where(SessionRow.session_id == session_id))
        return bool(getattr(result, "rowcount", 0))

    async def count(self) -> int:
        """How many sessions exist."""
        async with self._db() as db:
            return int(await db.scalar(select(func.count()).select_from(SessionRow)) or 0)
