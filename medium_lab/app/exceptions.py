"""The service's domain errors; `error_handlers` maps each to its HTTP status and error code.

AgentAPIError                     500 internal_error
├── NotFoundError                 404 not_found
│   ├── SessionNotFoundError
│   └── TaskNotFoundError
└── AgentRunError                 500 internal_error
    ├── AgentTimeoutError         504 timeout
    └── UpstreamError             502 upstream_error (the LLM provider failed)
"""


class AgentAPIError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(AgentAPIError):
    """A resource the client named does not exist (or is not theirs)."""

    status_code = 404
    code = "not_found"


class SessionNotFoundError(NotFoundError):
    """No session with that id."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"Session {session_id!r} not found")


class TaskNotFoundError(NotFoundError):
    """No background task with that id."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id!r} not found")


class AgentRunError(AgentAPIError):
    """The agent run failed."""


class AgentTimeoutError(AgentRunError):
    """The agent did not finish within AGENT_TIMEOUT_SECONDS."""

    status_code = 504
    code = "timeout"


class UpstreamError(AgentRunError):
    """The LLM provider failed: unreachable, an error status, or a reply that is not valid."""

    status_code = 502
    code = "upstream_error"
