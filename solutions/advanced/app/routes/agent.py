"""The agent's endpoints: queries (JSON or streamed), sessions and background tasks."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status
from fastapi.sse import EventSourceResponse, format_sse_event

from ..auth import CurrentUser
from ..dependencies import AgentDep, SettingsDep, TasksDep
from ..models import (
    SESSION_ID_PATTERN,
    QueryRequest,
    QueryResponse,
    SessionDeleted,
    SessionInfo,
    SessionList,
    StreamChunk,
    TaskAccepted,
    TaskStatus,
)
from . import error_responses

router = APIRouter(tags=["agent"])
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session's id.")]
# Task ids are hex; the pattern also keeps bytes a database cannot store (NUL) out of its queries.
TaskId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The task's id.")]
_SSE_DESCRIPTION = (
    "A `text/event-stream` of StreamChunk events: `start`, then `token` and `step` events, then exactly "
    "one `done` (the full answer) or `error`. Each event is `event: <type>` and `data: <StreamChunk JSON>`."
)
_STREAM_OK = {"content": {"text/event-stream": {}}, "description": _SSE_DESCRIPTION}
# The statuses each kind of route can answer besides its own: any user route, a body, an agent run.
_USER = (401, 403, 429)
_BODY = (400, 413, 422)
_RUN = (404, 502, 504)
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Cache": "BYPASS"}


async def prepared_query(body: QueryRequest, agent: AgentDep, user: CurrentUser) -> QueryRequest:
    """The query with its session checked before the stream starts, so a 404 is still a 404."""
    return await agent.check_session(body, user)


@router.post(
    "/query",
    response_model=QueryResponse,
    responses={
        **error_responses(*_USER, *_BODY, *_RUN),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    },
)
async def query(body: QueryRequest, agent: AgentDep, user: CurrentUser, response: Response) -> Any:
    """Ask the agent a question; with `"stream": true` the answer comes as the same SSE stream as /query/stream.

    JSON answers are cached: `X-Cache` says HIT (no agent run), MISS or BYPASS, as does `metadata.cached`.
    """
    if body.stream:
        return _event_stream(agent.stream_query(await agent.check_session(body, user), user))
    answer, cache_status = await agent.process_query(body, user)
    response.headers["X-Cache"] = cache_status
    return answer


def _event_stream(chunks: AsyncIterator[StreamChunk]) -> EventSourceResponse:
    """The chunks as an SSE response: `event: <type>` and `data: <StreamChunk JSON>` each.

    Both stream routes return this instead of being generators themselves: in FastAPI's generator mode, a
    keep-alive task fails, and uvicorn logs an error with its traceback, each time a client leaves mid-stream.
    """
    return EventSourceResponse(_encoded(chunks), headers=_STREAM_HEADERS)


async def _encoded(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield format_sse_event(event=chunk.type, data_str=chunk.model_dump_json())


@router.post(
    "/query/stream",
    # Not response_class=EventSourceResponse: that would put the route in the generator mode (see _event_stream).
    response_class=Response,
    responses={**error_responses(*_USER, *_BODY, *_RUN, json_beside_sse=True), 200: _STREAM_OK},
)
async def query_stream(
    body: Annotated[QueryRequest, Depends(prepared_query)], agent: AgentDep, user: CurrentUser
) -> EventSourceResponse:
    """Stream the agent's answer token by token as Server-Sent Events; disconnecting stops the run."""
    return _event_stream(agent.stream_query(body, user))


@router.get("/session/{session_id}", response_model=SessionInfo, responses=error_responses(*_USER, 404, 422))
async def get_session(session_id: SessionId, agent: AgentDep, user: CurrentUser) -> SessionInfo:
    """One of your sessions with its messages."""
    return await agent.get_session_info(session_id, user)


@router.delete("/session/{session_id}", response_model=SessionDeleted, responses=error_responses(*_USER, 404, 422))
async def delete_session(session_id: SessionId, agent: AgentDep, user: CurrentUser) -> SessionDeleted:
    """Delete one of your sessions and its conversation."""
    await agent.clear_session(session_id, user)
    return SessionDeleted(session_id=session_id)


@router.get("/sessions", response_model=SessionList, responses=error_responses(*_USER))
async def list_sessions(agent: AgentDep, user: CurrentUser) -> SessionList:
    """Your sessions, the most recently active first."""
    sessions = await agent.list_sessions(user)
    return SessionList(sessions=sessions, count=len(sessions))


@router.post(
    "/tasks",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    responses=error_responses(*_USER, *_BODY),
)
async def create_task(
    body: QueryRequest, agent: AgentDep, tasks: TasksDep, settings: SettingsDep, user: CurrentUser
) -> TaskAccepted:
    """Run a query in the background; poll the returned status_url for its answer."""

    async def run() -> QueryResponse:
        answer, _ = await agent.process_query(body.model_copy(update={"stream": False}), user)
        return answer

    task = await tasks.submit(run, owner=user.username)
    return TaskAccepted(task_id=task.task_id, status_url=f"{settings.api_prefix}/tasks/{task.task_id}")


@router.get("/tasks/{task_id}", response_model=TaskStatus, responses=error_responses(*_USER, 404, 422))
async def get_task(task_id: TaskId, tasks: TasksDep, user: CurrentUser) -> TaskStatus:
    """One of your background tasks: its status and, once completed, its answer."""
    return await tasks.get(task_id, owner=user.username)
