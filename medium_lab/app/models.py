"""The API's request and response models; every one carries an example for the docs."""

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_QUERY_LENGTH = 4000
# Control characters other than tab and newline, which a query may legitimately contain.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


_ANSWER_EXAMPLE: dict[str, Any] = {
    "response": "12 * 7 = 84.",
    "session_id": "demo-session",
    "execution_time": 0.42,
    "tokens_used": 312,
    "metadata": {
        "provider": "offline",
        "model": "offline-agent-1",
        "agents": ["supervisor", "researcher", "writer"],
        "tools_used": ["calculator"],
        "stop_reason": "completed",
    },
}
_SESSION_EXAMPLE: dict[str, Any] = {
    "session_id": "demo-session",
    "created_at": "2026-01-05T10:00:00Z",
    "updated_at": "2026-01-05T10:02:00Z",
    "message_count": 2,
}


def _examples(*examples: dict[str, Any]) -> ConfigDict:
    # TODO 14: give every model an example for the docs
    return ConfigDict()


class QueryRequest(BaseModel):
    """A question for the agent."""

    model_config = _examples({"query": "What is 12 * 7?", "session_id": "demo-session", "max_iterations": 5})

    # TODO 9: bound the QueryRequest fields
    query: str
    session_id: str | None = None
    stream: bool = False
    max_iterations: int = 5

    @field_validator("query", mode="before")
    @classmethod
    def _sanitise(cls, value: object) -> object:
        """Strip surrounding whitespace and remove control characters before the length checks."""
        # TODO 10: sanitise the query before its length is checked
        return value


class QueryResponse(BaseModel):
    """The agent's answer."""

    model_config = _examples(_ANSWER_EXAMPLE)

    response: str
    session_id: str
    execution_time: float = Field(description="Seconds the agent took.")
    tokens_used: int = Field(description="Tokens the model calls of this answer used, prompt and output.")
    metadata: dict[str, Any]


StreamEventType = Literal["start", "token", "step", "done", "error"]


class StreamChunk(BaseModel):
    """One Server-Sent Event of a streamed answer (sent as `event: <type>` and `data: <this JSON>`)."""

    model_config = _examples(
        {"type": "token", "content": "84", "session_id": "demo-session", "metadata": {"node": "writer"}}
    )

    type: StreamEventType
    content: str = ""
    session_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ChatMessage(BaseModel):
    """One message of a conversation."""

    model_config = _examples({"role": "user", "content": "What is 12 * 7?"})

    role: Literal["user", "assistant"]
    content: str


class SessionSummary(BaseModel):
    """A conversation, without its messages."""

    model_config = _examples(_SESSION_EXAMPLE)

    session_id: str
    created_at: datetime
    updated_at: datetime
    message_count: int


class SessionInfo(SessionSummary):
    """A conversation with its messages."""

    model_config = _examples(
        {
            **_SESSION_EXAMPLE,
            "messages": [
                {"role": "user", "content": "What is 12 * 7?"},
                {"role": "assistant", "content": "12 * 7 = 84."},
            ],
        }
    )

    messages: list[ChatMessage]


class SessionList(BaseModel):
    """All sessions."""

    model_config = _examples({"sessions": [_SESSION_EXAMPLE], "count": 1})

    sessions: list[SessionSummary]
    count: int


class SessionDeleted(BaseModel):
    """Confirms a deleted session."""

    model_config = _examples({"session_id": "demo-session", "deleted": True})

    session_id: str
    deleted: Literal[True] = True


TaskState = Literal["pending", "running", "completed", "failed"]


class TaskAccepted(BaseModel):
    """A background task was queued."""

    model_config = _examples(
        {"task_id": "3f2a9c1e8b7d4f6a", "status": "pending", "status_url": "/api/v1/tasks/3f2a9c1e8b7d4f6a"}
    )

    task_id: str
    status: TaskState = "pending"
    status_url: str


class TaskStatus(BaseModel):
    """A background task's state and, once completed, its answer."""

    model_config = _examples(
        {
            "task_id": "3f2a9c1e8b7d4f6a",
            "status": "completed",
            "result": _ANSWER_EXAMPLE,
            "error": None,
        }
    )

    task_id: str
    status: TaskState
    result: QueryResponse | None = None
    error: str | None = None


ErrorCode = Literal[
    "validation_error",
    "not_found",
    "method_not_allowed",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "timeout",
    "upstream_error",
    "internal_error",
]


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx answer."""

    model_config = _examples(
        {"error": "not_found", "detail": "Session 'demo-session' not found", "request_id": "7c1f0e5b9a2d4c3e"}
    )

    error: ErrorCode
    detail: str
    request_id: str


class RootInfo(BaseModel):
    """Where to find things."""

    model_config = _examples(
        {"name": "Agent API (medium lab)", "version": "1.0.0", "docs_url": "/docs", "health_url": "/health"}
    )

    name: str
    version: str
    docs_url: str
    health_url: str


class DependencyStatus(BaseModel):
    """One dependency's state."""

    model_config = _examples({"status": "up", "latency_ms": 0.1, "detail": "offline model offline-agent-1"})

    status: Literal["up", "down"]
    latency_ms: float | None = None
    detail: str = ""


class HealthResponse(BaseModel):
    """The service's health."""

    model_config = _examples(
        {
            "status": "healthy",
            "version": "1.0.0",
            "uptime_seconds": 12.5,
            "dependencies": {"llm": {"status": "up", "latency_ms": 0.1, "detail": "offline model offline-agent-1"}},
        }
    )

    status: Literal["healthy", "degraded", "unhealthy"]
    version: str
    uptime_seconds: float
    dependencies: dict[str, DependencyStatus]
