"""Background tasks: queries run after a 202 answer, polled by id, never silently lost on shutdown."""

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from .exceptions import AgentAPIError, TaskNotFoundError
from .models import QueryResponse, TaskStatus

logger = logging.getLogger(__name__)
SHUTDOWN_ERROR = "internal_error: the server shut down before the task finished"


class TaskManager:
    """Runs each task as an asyncio task and keeps its status; forgets the oldest finished ones."""

    def __init__(self, max_finished: int = 1000) -> None:
        self._statuses: OrderedDict[str, TaskStatus] = OrderedDict()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._max_finished = max_finished

    def submit(self, run: Callable[[], Awaitable[QueryResponse]]) -> TaskStatus:
        """Start a task and return its pending status."""
        task_id = uuid.uuid4().hex
        status = self._statuses[task_id] = TaskStatus(task_id=task_id, status="pending")
        self._running[task_id] = asyncio.create_task(self._run(task_id, run), name=f"task-{task_id}")
        return status

    def get(self, task_id: str) -> TaskStatus:
        """The task's status, or TaskNotFoundError."""
        status = self._statuses.get(task_id)
        if status is None:
            raise TaskNotFoundError(task_id)
        return status

    async def shutdown(self) -> None:
        """Cancel unfinished tasks and mark them failed, so a client polling them learns what happened."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, task_id: str, run: Callable[[], Awaitable[QueryResponse]]) -> None:
        self._statuses[task_id] = TaskStatus(task_id=task_id, status="running")
        try:
            result = await run()
        except asyncio.CancelledError:
            self._statuses[task_id] = TaskStatus(task_id=task_id, status="failed", error=SHUTDOWN_ERROR)
            raise
        except AgentAPIError as exc:
            self._statuses[task_id] = TaskStatus(task_id=task_id, status="failed", error=f"{exc.code}: {exc.detail}")
        except Exception:
            logger.exception("background task %s failed", task_id)
            self._statuses[task_id] = TaskStatus(
                task_id=task_id, status="failed", error="internal_error: the task failed unexpectedly"
            )
        else:
            self._statuses[task_id] = TaskStatus(task_id=task_id, status="completed", result=result)
        finally:
            self._running.pop(task_id, None)
            self._forget_oldest_finished()

    def _forget_oldest_finished(self) -> None:
        finished = [task_id for task_id in self._statuses if task_id not in self._running]
        for task_id in finished[: max(len(finished) - self._max_finished, 0)]:
            del self._statuses[task_id]
