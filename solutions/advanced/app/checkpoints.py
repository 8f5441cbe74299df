"""LangGraph checkpoints in the database, so sessions survive restarts and are shared by every instance."""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from sqlalchemy.engine import make_url

from .database import START_UP_LOCK_PATIENCE_SECONDS, held_too_long
from .logging_config import get_logger
from .to_completion import to_completion

logger = get_logger(__name__)

# Any fixed number (not the migrations' one): the PostgreSQL advisory lock under which one worker at a time sets up
# the checkpoint tables.
_SETUP_LOCK_ID = 7_311_921
# How often a worker waiting for another one's setup says so.
_SETUP_LOCK_REPORT_SECONDS = 10.0


class CommittedSqliteSaver(AsyncSqliteSaver):
    """SQLite checkpoints whose every write is committed, even when the run that asked for it is cancelled.

    AsyncSqliteSaver executes a write, then awaits the commit. A cancellation between the two leaves its
    connection inside the write transaction, holding SQLite's write lock until some later checkpoint commits; on a
    quiet server every other writer (the session rows, the tasks) waits out its busy timeout and fails with
    "database is locked". Running each write to completion closes that gap.
    """

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await to_completion(super().aput(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str = ""
    ) -> None:
        await to_completion(super().aput_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await to_completion(super().adelete_thread(thread_id))


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A checkpointer on the same database as the rest of the app (SQLite or PostgreSQL), ready to use."""
    # BEGIN SOLUTION TODO 24: keep the checkpoints in the database (SQLite or PostgreSQL), so sessions survive restarts
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        async with aiosqlite.connect(url.database or ":memory:", timeout=30) as connection:
            # WAL lets readers and one writer from several processes share the file.
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA busy_timeout=30000")
            await connection.execute("PRAGMA synchronous=NORMAL")  # as the app's engine (see database.py)
            sqlite_saver = CommittedSqliteSaver(connection)
            await sqlite_saver.setup()
            yield sqlite_saver
        return
    if url.get_backend_name() == "postgresql":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg import AsyncConnection
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        options: dict[str, Any] = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        # setup() reads the tables' version, then creates them: workers starting together on a new database would
        # all create them, and all but one fail. One at a time, under an advisory lock held until this closes.
        async with await AsyncConnection.connect(conninfo, **options) as connection:
            await _advisory_lock(connection, _SETUP_LOCK_ID)
            await AsyncPostgresSaver(connection).setup()
        async with AsyncConnectionPool(conninfo, kwargs=options, min_size=1, max_size=10, open=False) as pool:
            yield AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        return
    raise ValueError(f"DATABASE_URL {url.render_as_string()} is neither SQLite nor PostgreSQL")
    # BEGIN STARTER
    # from langgraph.checkpoint.memory import InMemorySaver
    #
    # yield InMemorySaver()  # in this process only: lost at every restart
    # END STARTER
    # END SOLUTION


async def _advisory_lock(
    connection: Any,
    key: int,
    *,
    patience: float = START_UP_LOCK_PATIENCE_SECONDS,
    report_every: float = _SETUP_LOCK_REPORT_SECONDS,
) -> None:
    """Take a session-level advisory lock, asking again every 50 ms rather than waiting inside a statement.

    setup() creates indexes CONCURRENTLY, which waits for every open transaction to end, including another worker's
    `SELECT pg_advisory_lock(...)` still waiting for this lock: PostgreSQL would call that a deadlock.

    The holder is another worker in its setup, which takes well under a second, and a worker that dies lets go with
    its connection. One that hangs (its CREATE INDEX CONCURRENTLY waiting for someone's open transaction) would
    stall every other start: so the wait is logged while it lasts, and ends in an error after `patience` seconds.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    reported = started
    while True:
        row = await (await connection.execute("SELECT pg_try_advisory_lock(%s) AS taken", (key,))).fetchone()
        if row["taken"]:
            return
        now = loop.time()
        if now - started >= patience:
            raise held_too_long("checkpoint tables' setup", key, patience)
        if now - reported >= report_every:
            reported = now
            logger.warning("waiting for another worker to set up the checkpoint tables", waited_s=round(now - started))
        await asyncio.sleep(0.05)
