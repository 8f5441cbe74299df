"""The service's domain errors; `error_handlers` maps each to its HTTP status and error code.

AgentAPIError                     500 internal_error
├── UnauthorizedError             401 unauthorized (with WWW-Authenticate: Bearer)
├── ForbiddenError                403 forbidden (an inactive user)
├── NotFoundError                 404 not_found
│   ├── SessionNotFoundError
│   └── TaskNotFoundError
├── PayloadTooLargeError          413 payload_too_large
├── TooManyAttemptsError          429 rate_limited (with Retry-After: failed logins for one username)
└── AgentRunError                 500 internal_error
    ├── AgentTimeoutError         504 timeout
    └── UpstreamError             502 upstream_error (the LLM provider failed)
"""

from typing import ClassVar


class AgentAPIError(Exception):
    """Base of every error the service raises on purpose."""

    status_code = 500
    code = "internal_error"
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def response_headers(self) -> dict[str, str]:
        """The headers the error's answer carries."""
        return dict(self.headers)


class UnauthorizedError(AgentAPIError):
    """No credentials, or credentials that do not prove who the caller is."""

    status_code = 401
    code = "unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class ForbiddenError(AgentAPIError):
    """The caller is known but may not act (the account is disabled)."""

    status_code = 403
    code = "forbidden"


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


class PayloadTooLargeError(AgentAPIError):
    """The request body is larger than MAX_REQUEST_BYTES."""

    status_code = 413
    code = "payload_too_large"


class TooManyAttemptsError(AgentAPIError):
    """Too many failed logins for one username; Retry-After says when the next attempt is counted."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


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
