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
    # TODO 24: keep the checkpoints in the database (SQLite or PostgreSQL), so sessions survive restarts
    from langgraph.checkpoint.memory import InMemorySaver

    yield InMemorySaver()  # in this process only: lost at every restart


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
