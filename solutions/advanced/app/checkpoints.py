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
    # BEGIN SOLUTION TODO 24: keep the checkpoints in the database (SQLite or PostgreSQL), so sessions survive restarts
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with aiosqlite.connect(url.database or ":memory:", timeout=30) as connection:
            # WAL lets readers and one writer from several processes share the file.
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA busy_timeout=30000")
            await connection.execute("PRAGMA synchronous=NORMAL")  # as the app's engine (see database.py)
            sqlite_saver = AsyncSqliteSaver(connection)
            await sqlite_saver.setup()
            yield sqlite_saver
        return
    if url.get_backend_name() == "postgresql":
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        options = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
        async with AsyncConnectionPool(conninfo, kwargs=options, min_size=1, max_size=10, open=False) as pool:
            postgres_saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await postgres_saver.setup()
            yield postgres_saver
        return
    raise ValueError(f"DATABASE_URL {url.render_as_string()} is neither SQLite nor PostgreSQL")
    # BEGIN STARTER
    # from langgraph.checkpoint.memory import InMemorySaver
    #
    # yield InMemorySaver()  # in this process only: lost at every restart
    # END STARTER
    # END SOLUTION
