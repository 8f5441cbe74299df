"""Background tasks, kept in the database: owned by a user, polled by id, never silently lost."""

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .database import TaskRow, utcnow
from .exceptions import AgentAPIError, TaskNotFoundError
from .logging_config import get_logger
from .models import QueryResponse, TaskStatus

logger = get_logger(__name__)
SHUTDOWN_ERROR = "internal_error: the server shut down before the task finished"
LOST_ERROR = "internal_error: the server running the task stopped before it finished"
_UNFINISHED = ("pending", "running")


class TaskManager:
    """Runs each task as an asyncio task in this process and keeps its status in the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, stale_after_seconds: float) -> None:
        self._db = sessions
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stale_after = timedelta(seconds=stale_after_seconds)

    async def submit(self, run: Callable[[], Awaitable[QueryResponse]], owner: str) -> TaskStatus:
        """Record a pending task, start it, and return its status."""
        task_id = secrets.token_hex(16)
        now = utcnow()
        async with self._db.begin() as db:
            db.add(TaskRow(task_id=task_id, owner=owner, status="pending", created_at=now, updated_at=now))
        self._running[task_id] = asyncio.create_task(self._run(task_id, run), name=f"task-{task_id}")
        return TaskStatus(task_id=task_id, status="pending")

    async def get(self, task_id: str, owner: str) -> TaskStatus:
        """The owner's task, or TaskNotFoundError (also for another user's task)."""
        async with self._db() as db:
            row = await db.get(TaskRow, task_id)
        # BEGIN SOLUTION TODO 14: answer 404 for another user's task
        if row is None or row.owner != owner:
            raise TaskNotFoundError(task_id)
        # BEGIN STARTER
        # if row is None:
        #     raise TaskNotFoundError(task_id)
        # END STARTER
        # END SOLUTION
        if row.status in _UNFINISHED and _as_utc(row.updated_at) < utcnow() - self._stale_after:
            # Its server died without a word and no start-up has cleaned up since: say so, not "running" forever.
            await self.fail_stale()
            return TaskStatus(task_id=row.task_id, status="failed", error=LOST_ERROR)
        result = QueryResponse.model_validate(row.result) if row.result else None
        return TaskStatus(task_id=row.task_id, status=row.status, result=result, error=row.error)

    async def fail_stale(self) -> int:
        """Mark tasks left unfinished by a server that stopped (long untouched) as failed; how many."""
        cutoff = utcnow() - self._stale_after
        statement = (
            update(TaskRow)
            .where(TaskRow.status.in_(_UNFINISHED), TaskRow.updated_at < cutoff)
            .values(status="failed", error=LOST_ERROR, updated_at=utcnow())
        )
        async with self._db.begin() as db:
            result = await db.execute(statement)
        return int(getattr(result, "rowcount", 0) or 0)

    async def shutdown(self) -> None:
        """Cancel this process's unfinished tasks; each is marked failed, so a client polling learns why."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _set(
        self, task_id: str, status: str, result: QueryResponse | None = None, error: str | None = None
    ) -> None:
        values: dict[str, Any] = {"status": status, "error": error, "updated_at": utcnow()}
        if result is not None:
            values["result"] = result.model_dump(mode="json")
        async with self._db.begin() as db:
            await db.execute(update(TaskRow).where(TaskRow.task_id == task_id).values(**values))

    async def _run(self, task_id: str, run: Callable[[], Awaitable[QueryResponse]]) -> None:
        try:
            await self._set(task_id, "running")
            result = await run()
        except asyncio.CancelledError:
            await asyncio.shield(self._set(task_id, "failed", error=SHUTDOWN_ERROR))
            raise
        except AgentAPIError as exc:
            await self._set(task_id, "failed", error=f"{exc.code}: {exc.detail}")
        except Exception:
            logger.exception("background task failed", task_id=task_id)
            await self._set(task_id, "failed", error="internal_error: the task failed unexpectedly")
        else:
            await self._set(task_id, "completed", result=result)
        finally:
            self._running.pop(task_id, None)


def _as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every one stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
