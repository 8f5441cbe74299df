"""The API's routers, one per resource, and the error responses they document."""

from typing import Any

from ..models import ErrorResponse

_ERROR_TEXTS = {
    400: "The body could not be read (it is not UTF-8, or not a form).",
    401: "Not authenticated (a missing, invalid or expired token).",
    403: "The account is disabled.",
    404: "No such resource (or not yours).",
    413: "The body is larger than MAX_REQUEST_BYTES.",
    422: "The request is not valid.",
    429: "Too many requests; see Retry-After.",
    502: "The LLM provider failed.",
    504: "The agent did not answer in time.",
}


def error_responses(*codes: int, json_beside_sse: bool = False) -> dict[int | str, dict[str, Any]]:
    """An ErrorResponse documented for each status a route can answer (the fuzz tests hold routes to it)."""
    if json_beside_sse:  # the route's media type is text/event-stream, but its errors are JSON all the same
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
        return {code: {"description": _ERROR_TEXTS[code], "content": content} for code in sorted(codes)}
    return {code: {"model": ErrorResponse, "description": _ERROR_TEXTS[code]} for code in sorted(codes)}
