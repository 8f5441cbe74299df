"""Maps every error to an ErrorResponse body, in one place; no traceback ever reaches a client."""

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .exceptions import AgentAPIError
from .models import ErrorCode, ErrorResponse

logger = logging.getLogger(__name__)
_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "validation_error",
    429: "rate_limited",
    502: "upstream_error",
    504: "timeout",
}


def error_response(request: Request, status_code: int, code: ErrorCode, detail: str) -> JSONResponse:
    """An ErrorResponse with the request's id in the body and in X-Request-ID."""
    request_id = getattr(request.state, "request_id", "-")
    body = ErrorResponse(error=code, detail=detail, request_id=request_id)
    return JSONResponse(body.model_dump(), status_code=status_code, headers={"X-Request-ID": request_id})


async def _agent_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentAPIError)
    return error_response(request, exc.status_code, exc.code, exc.detail)  # type: ignore[arg-type]


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(request, 422, "validation_error", "; ".join(problems) or "Invalid request")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES.get(exc.status_code, "internal_error" if exc.status_code >= 500 else "validation_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    response = error_response(request, exc.status_code, code, detail)
    response.headers.update(exc.headers or {})
    return response


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(request, 500, "internal_error", "An unexpected error occurred; the request id identifies it")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into an ErrorResponse."""
    app.add_exception_handler(RequestValidationError, _validation_error)  # given: a 422 body names each problem
    # BEGIN SOLUTION TODO 11: register the handlers for the domain errors, HTTP errors and anything unexpected
    app.add_exception_handler(AgentAPIError, _agent_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
    # BEGIN STARTER
    # END STARTER
    # END SOLUTION
