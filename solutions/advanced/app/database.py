"""The database (exercise 2): users, session metadata and background tasks, via SQLAlchemy 2 async.

SQLite by default (`sqlite+aiosqlite:///./lab.db`), PostgreSQL for real (`postgresql+asyncpg://...`).
The schema is Alembic's: `migrate()` brings a database to the latest revision at start-up.
"""

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import JSON, Boolean, DateTime, Integer, String, Text, event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .logging_config import get_logger

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Any fixed number: the PostgreSQL advisory lock that lets one worker at a time migrate.
_MIGRATION_LOCK_ID = 7_311_920
# How long a connection asks again while another process puts a new SQLite file in WAL mode (milliseconds of work).
_WAL_SWITCH_PATIENCE_SECONDS = 30.0
# How long a worker waits for another one's start-up work under a PostgreSQL advisory lock (the migration, the
# checkpoint tables' setup: well under a second each) before it gives up.
START_UP_LOCK_PATIENCE_SECONDS = 300.0
logger = get_logger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of every table."""


class UserRow(Base):
    """A user who can log in."""

    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    full_name: Mapped[str] = mapped_column(String(200), default="")
    hashed_password: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SessionRow(Base):
    """A conversation's metadata; its messages are the LangGraph checkpoints of thread `session_id`."""

    __tablename__ = "sessions"

    session_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    message_count: Mapped[int] = mapped_column(Integer, default=0)


class TaskRow(Base):
    """A background task and, once finished, its result or error."""

    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


def create_engine(database_url: str) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so several workers can share one file."""
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, connect_args={"timeout": 30})

        operational_error = engine.dialect.loaded_dbapi.OperationalError

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            _enter_wal_mode(dbapi_connection, operational_error)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            # In WAL mode, NORMAL syncs at checkpoints instead of at every commit: a commit survives the process
            # crashing, and only the last commits can be lost to a power failure (what most services accept).
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(database_url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _enter_wal_mode(dbapi_connection: Any, operational_error: type[Exception]) -> None:
    """Put the file in WAL mode, waiting out another process that is putting a new file in WAL mode at that moment.

    SQLite refuses a connection that asks for WAL while another converts the file with "database is locked" at
    once, without waiting out its busy timeout: workers starting together on a new file meet exactly that (a probe:
    4 processes, a new file each round, one or more refused in 17 rounds of 40). The conversion takes milliseconds,
    so asking again shortly is enough; on a file already in WAL mode the first ask succeeds. The short sleeps block
    the event loop, but only at start-up and only while another process converts the file.
    """
    deadline = time.monotonic() + _WAL_SWITCH_PATIENCE_SECONDS
    while True:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except operational_error as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        finally:
            cursor.close()
        time.sleep(0.01)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(database_url: str) -> Config:
    """Alembic's configuration for this lab, pointing at the migrations folder and the given database."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


async def migrate(engine: AsyncEngine, *, lock_patience: float = START_UP_LOCK_PATIENCE_SECONDS) -> None:
    """Upgrade the database to the latest revision, one process at a time (waiting up to `lock_patience` seconds
    for another's migration on PostgreSQL)."""
    async with engine.begin() as connection:
        await _lock_out_other_migrations(connection, lock_patience)
        # BEGIN SOLUTION TODO 29: run Alembic's migrations to head at start-up, on this connection
        url = engine.url.render_as_string(hide_password=False)

        def upgrade(sync_connection: Connection) -> None:
            config = alembic_config(url)
            config.attributes["connection"] = sync_connection
            command.upgrade(config, "head")

        await connection.run_sync(upgrade)
        # BEGIN STARTER
        # # Until then the tables come from the models: no revision is recorded, so no later migration ever runs here.
        # await connection.run_sync(Base.metadata.create_all)
        # END STARTER
        # END SOLUTION


async def _lock_out_other_migrations(connection: AsyncConnection, patience: float) -> None:
    """Make every other process's migration wait until this transaction ends, and then find nothing to do.

    Workers that start together would otherwise all find the tables missing and all create them: every one but
    the first then fails to start ("table ... already exists"). PostgreSQL has advisory locks, held here until
    the transaction ends. SQLite has none: BEGIN IMMEDIATE takes the database's write lock at once, and the
    others' BEGIN IMMEDIATE waits for it (the busy timeout) before they read the revision.

    On PostgreSQL the wait is bounded by `patience`: a migration stuck behind a transaction left open elsewhere
    would otherwise stall every worker's start, in silence.
    """
    if connection.dialect.name == "postgresql":
        if (await connection.execute(text(f"SELECT pg_try_advisory_xact_lock({_MIGRATION_LOCK_ID})"))).scalar():
            return
        logger.info("waiting for another worker's migration", patience_s=patience)
        await connection.execute(text(f"SET LOCAL lock_timeout = {max(1, round(patience * 1000))}"))
        try:
            await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})"))
        except DBAPIError as exc:
            if "lock timeout" not in str(exc.orig):
                raise
            raise held_too_long("migration", _MIGRATION_LOCK_ID, patience) from exc
        await connection.execute(text("SET LOCAL lock_timeout = DEFAULT"))  # the migration itself may wait
    elif connection.dialect.name == "sqlite":
        await connection.exec_driver_sql("BEGIN IMMEDIATE")


def held_too_long(work: str, key: int, patience: float) -> RuntimeError:
    """The error a worker fails to start with when another has held the lock of its start-up `work` too long."""
    return RuntimeError(
        f"Another process has held the {work} lock (PostgreSQL advisory lock {key}) for {patience:g} s; it may be "
        "waiting for a transaction left open (see pg_stat_activity)"
    )


async def ping(engine: AsyncEngine) -> None:
    """Raise if the database does not answer a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
