"""Structured logging: one JSON object per line on stdout (or readable lines), secrets never written."""

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO, cast

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from .config import Settings

SECRET_KEYS = frozenset(
    {"password", "token", "access_token", "authorization", "secret_key", "api_key", "openai_api_key", "cookie"}
)
REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+")


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Blank out values stored under secret-sounding keys, and bearer tokens written inside text."""
    for key, value in event_dict.items():
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        elif isinstance(value, str) and "earer" in value:
            event_dict[key] = _BEARER.sub(f"Bearer {REDACTED}", value)
    return event_dict


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the current OpenTelemetry trace and span ids, so a log line leads to its trace."""
    from opentelemetry import trace

    # BEGIN SOLUTION TODO 27: add the current trace and span ids to every log line
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    # BEGIN STARTER
    # END STARTER
    # END SOLUTION
    return event_dict


def _serialise(event_dict: MutableMapping[str, Any], **_: Any) -> bytes:
    return orjson.dumps(event_dict, default=str)


def configure_logging(settings: Settings) -> None:
    """Configure structlog and route the standard library's loggers (uvicorn's too) through it."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    if settings.tracing_enabled:
        shared.append(add_trace_ids)
    shared += [redact_secrets, structlog.processors.format_exc_info]
    # BEGIN SOLUTION TODO 2: render one JSON object per line unless LOG_FORMAT=console
    json_lines = settings.log_format == "json"
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_serialise)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    # BEGIN STARTER
    # json_lines = False
    # renderer: Processor = structlog.dev.ConsoleRenderer(colors=False)
    # END STARTER
    # END SOLUTION
    logger_factory: Any = (
        structlog.BytesLoggerFactory(cast(BinaryIO, _Stdout(binary=True)))
        if json_lines
        else structlog.PrintLoggerFactory(cast(TextIO, _Stdout(binary=False)))
    )
    level = logging.getLevelNamesMapping()[settings.log_level]
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        # Not cached: a cached logger keeps the configuration it first saw, and tests configure many times.
        cache_logger_on_first_use=False,
    )
    _route_stdlib(shared, renderer, level)


def _route_stdlib(shared: list[Processor], renderer: Processor, level: int) -> None:
    """Send records of the standard library's loggers through the same processors, to stdout."""
    handler = logging.StreamHandler(_Stdout(binary=False))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _as_text(renderer)],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # The access middleware writes one richer line per request; uvicorn's own would repeat it. Without handlers
    # and not propagating, uvicorn sees no one listening and does not even format its line.
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate, access.disabled = [], False, True


def _as_text(renderer: Processor) -> Processor:
    """The stdlib formatter needs text, and the JSON renderer gives bytes."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        rendered = renderer(logger, name, event_dict)
        return rendered.decode() if isinstance(rendered, bytes) else str(rendered)

    return render


class _Stdout:
    """Whatever sys.stdout is at the time of writing (test runners swap it)."""

    def __init__(self, *, binary: bool) -> None:
        self.binary = binary

    def write(self, data: Any) -> Any:
        return (sys.stdout.buffer if self.binary else sys.stdout).write(data)

    def flush(self) -> None:
        sys.stdout.flush()


def get_logger(name: str) -> Any:
    """A structlog logger named for its module."""
    return structlog.get_logger(name)
