"""LangGraph checkpoints in the database, so sessions survive restarts and are shared by every instance."""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from sqlalchemy.engine import make_url

from .to_completion import to_completion


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
