"""The agent's endpoints: queries (JSON or streamed), sessions and background tasks."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response, status
from fastapi.sse import EventSourceResponse, format_sse_event

from ..dependencies import AgentDep, SettingsDep, TasksDep
from ..models import (
    SESSION_ID_PATTERN,
    ErrorResponse,
    QueryRequest,
    QueryResponse,
    SessionDeleted,
    SessionInfo,
    SessionList,
    StreamChunk,
    TaskAccepted,
    TaskStatus,
)

router = APIRouter(tags=["agent"])
SessionId = Annotated[str, Path(pattern=SESSION_ID_PATTERN, description="The session's id.")]
_SSE_DESCRIPTION = (
    "A `text/event-stream` of StreamChunk events: `start`, then `token` and `step` events, then exactly "
    "one `done` (the full answer) or `error`. Each event is `event: <type>` and `data: <StreamChunk JSON>`."
)
_STREAM_OK = {"content": {"text/event-stream": {}}, "description": _SSE_DESCRIPTION}
_ERROR_TEXTS = {
    400: "The body could not be read (it is not UTF-8).",
    404: "No such resource.",
    422: "The request is not valid.",
    429: "Too many requests; see Retry-After.",
    502: "The LLM provider failed.",
    504: "The agent did not answer in time.",
}
# The statuses each kind of route can answer besides its own: any route (the rate limit), a body, an agent run.
_ANY = (429,)
_BODY = (400, 422)
_RUN = (502, 504)


def _errors(*codes: int, json_beside_sse: bool = False) -> dict[int | str, dict[str, Any]]:
    """An ErrorResponse documented for each status a route can answer."""
    if json_beside_sse:  # the route's media type is text/event-stream, but its errors are JSON all the same
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        return {code: {"description": _ERROR_TEXTS[code], "content": content} for code in sorted(codes)}
    return {code: {"model": ErrorResponse, "description": _ERROR_TEXTS[code]} for code in sorted(codes)}


@router.post(
    "/query",
    response_model=QueryResponse,
    responses={
        **_errors(*_ANY, *_BODY, *_RUN),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE if stream"},
    },
)
async def query(body: QueryRequest, agent: AgentDep) -> Any:
    """Ask the agent a question; with `"stream": true` the answer comes as the same SSE stream as /query/stream."""
    # BEGIN SOLUTION TODO 1: answer POST /query as JSON, or as the SSE stream when asked
    if body.stream:
        return _event_stream(agent.stream_query(body))
    return await agent.process_query(body)
    # END SOLUTION


def _event_stream(chunks: AsyncIterator[StreamChunk]) -> EventSourceResponse:
    """The chunks as an SSE response: `event: <type>` and `data: <StreamChunk JSON>` each.

    Both stream routes return this instead of being generators themselves: in FastAPI's generator mode, a
    keep-alive task fails, and uvicorn logs an error with its traceback, each time a client leaves mid-stream.
    """
    return EventSourceResponse(_encoded(chunks), headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _encoded(chunks: AsyncIterator[StreamChunk]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        yield format_sse_event(event=chunk.type, data_str=chunk.model_dump_json())


@router.post(
    "/query/stream",
    # Not response_class=EventSourceResponse: that would put the route in the generator mode (see _event_stream).
    response_class=Response,
    responses={**_errors(*_ANY, *_BODY, *_RUN, json_beside_sse=True), 200: _STREAM_OK},
)
async def query_stream(body: QueryRequest, agent: AgentDep) -> EventSourceResponse:
    """Stream the agent's answer token by token as Server-Sent Events; disconnecting stops the run."""
    return _event_stream(agent.stream_query(body))


@router.get("/session/{session_id}", response_model=SessionInfo, responses=_errors(*_ANY, 404, 422))
async def get_session(session_id: SessionId, agent: AgentDep) -> SessionInfo:
    """A session with its messages."""
    return await agent.get_session_info(session_id)


@router.delete("/session/{session_id}", response_model=SessionDeleted, responses=_errors(*_ANY, 404, 422))
async def delete_session(session_id: SessionId, agent: AgentDep) -> SessionDeleted:
    """Delete a session and its conversation."""
    await agent.clear_session(session_id)
    return SessionDeleted(session_id=session_id)


@router.get("/sessions", response_model=SessionList, responses=_errors(*_ANY))
async def list_sessions(agent: AgentDep) -> SessionList:
    """Every session, the most recently active first."""
    sessions = agent.list_sessions()
    return SessionList(sessions=sessions, count=len(sessions))


@router.post(
    "/tasks", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted, responses=_errors(*_ANY, *_BODY)
)
async def create_task(body: QueryRequest, agent: AgentDep, tasks: TasksDep, settings: SettingsDep) -> TaskAccepted:
    """Run a query in the background; poll the returned status_url for its answer."""
    # BEGIN SOLUTION TODO 13: run the query in the background and answer 202 at once
    task = tasks.submit(lambda: agent.process_query(body.model_copy(update={"stream": False})))
    return TaskAccepted(task_id=task.task_id, status_url=f"{settings.api_prefix}/tasks/{task.task_id}")
    # END SOLUTION


@router.get("/tasks/{task_id}", response_model=TaskStatus, responses=_errors(*_ANY, 404, 422))
async def get_task(task_id: Annotated[str, Path(max_length=64)], tasks: TasksDep) -> TaskStatus:
    """A background task's status and, once completed, its answer."""
    return tasks.get(task_id)
