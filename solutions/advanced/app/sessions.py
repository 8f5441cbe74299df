"""Session bookkeeping in the database, and the lock that makes turns of one session take turns.

The messages live in the LangGraph checkpointer (the same database); this store keeps who owns each session,
when it started and changed, and how many messages it holds.
"""

import asyncio
import contextlib
import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockNotOwnedError, RedisError
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.elements import BindParameter

from .database import SessionRow, utcnow
from .logging_config import get_logger

logger = get_logger(__name__)


@functools.cache
def _upsert(dialect: str) -> ReturningInsert[str, datetime]:
    """A session's row inserted, or its count and time updated; its owner and creation time returned. INSERT ...
    ON CONFLICT DO UPDATE, which both databases have (SQLite since 3.24, RETURNING since 3.35). Built once."""
    row: dict[str, BindParameter[Any]] = {
        "session_id": bindparam("session_id"),
        "owner": bindparam("owner"),
        "created_at": bindparam("at"),
        "updated_at": bindparam("at"),
        "message_count": bindparam("message_count"),
    }
    key = [SessionRow.session_id]
    if dialect == "postgresql":
        pg = postgresql.insert(SessionRow).values(row)
        changed = {"updated_at": pg.excluded.updated_at, "message_count": pg.excluded.message_count}
        return pg.on_conflict_do_update(index_elements=key, set_=changed).returning(
            SessionRow.owner, SessionRow.created_at
        )
    lite = sqlite.insert(SessionRow).values(row)
    changed = {"updated_at": lite.excluded.updated_at, "message_count": lite.excluded.message_count}
    return lite.on_conflict_do_update(index_elements=key, set_=changed).returning(
        SessionRow.owner, SessionRow.created_at
    )


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
        self._giving_back: set[asyncio.Task[None]] = set()

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
        token = secrets.token_hex(16)
        try:
            acquired = bool(await shared.acquire(token=token))
        except RedisError as exc:
            logger.warning("session lock without Redis", error=type(exc).__name__)
            acquired = False
        except BaseException:
            # Cancelled while asking (a client that left): Redis may have granted the lock all the same, and it
            # would stay taken until it expired. Given back if so; in a task, which a cancellation cannot cut.
            self._give_back(shared, token)
            raise
        try:
            yield
        finally:
            if acquired:
                try:
                    await shared.release()
                except RedisError as exc:
                    logger.warning("session lock release failed", error=type(exc).__name__)

    def _give_back(self, shared: Lock, token: str) -> None:
        async def release_if_granted() -> None:
            with contextlib.suppress(LockNotOwnedError, RedisError):
                await shared.do_release(token.encode())

        task = asyncio.create_task(release_if_granted(), name="session-lock-give-back")
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def given_back(self) -> None:
        """Wait until every lock of a cancelled request has been given back (before the app closes Redis)."""
        await asyncio.gather(*self._giving_back, return_exceptions=True)

    async def get(self, session_id: str) -> SessionRecord | None:
        """The session's record, whoever owns it, or None."""
        async with self._db() as db:
            row = await db.get(SessionRow, session_id)
        return None if row is None else _record(row)

    async def record_turn(
        self, session_id: str, owner: str, message_count: int, *, at: datetime | None = None
    ) -> SessionRecord:
        """Note a turn finished now (or `at`), creating the session on its first.

        One statement, an upsert that returns the row: every agent turn and every turn written behind comes
        through here, and loading the row into the ORM to change two columns cost nearly twice the CPU.
        """
        now = at or utcnow()
        async with self._db.begin() as db:
            connection = await db.connection()
            values = {"session_id": session_id, "owner": owner, "at": now, "message_count": message_count}
            stored_owner, created_at = (await connection.execute(_upsert(connection.dialect.name), values)).one()
        return SessionRecord(session_id, stored_owner, _aware(created_at), _aware(now), message_count)

    async def list(self, owner: str) -> list[SessionRecord]:
        """The owner's sessions, the most recently active first."""
        # BEGIN SOLUTION TODO 15: list only the caller's own sessions
        query = select(SessionRow).where(SessionRow.owner == owner).order_by(SessionRow.updated_at.desc())
        # BEGIN STARTER
        # query = select(SessionRow).order_by(SessionRow.updated_at.desc())
        # END STARTER
        # END SOLUTION
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
