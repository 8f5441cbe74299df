"""LangGraph checkpoints in the database, so sessions survive restarts and are shared by every instance."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.engine import make_url


@asynccontextmanager
async def open_checkpointer(database_url: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """A checkpointer on the same database as the rest of the app (SQLite or PostgreSQL), ready to use."""
    # TODO 24: keep the checkpoints in the database (SQLite or PostgreSQL), so sessions survive restarts
    from langgraph.checkpoint.memory import InMemorySaver

    yield InMemorySaver()  # in this process only: lost at every restart
