"""One error type and the handlers that turn every error into an ErrorResponse."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 422: "validation_error"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers or {}


def error_body(request_id: str, code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail, "request_id": request_id}


def _respond(request: Request, status: int, code: str, detail: str, headers: dict[str, str]) -> JSONResponse:
    body = error_body(request.state.request_id, code, detail)
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return _respond(request, exc.status, exc.code, exc.detail, exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = CODES.get(exc.status_code, "internal_error")
    return _respond(request, exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    return _respond(request, 422, "validation_error", "the request is not valid", {})


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
