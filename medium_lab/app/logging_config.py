"""Logging for the medium lab: one line per record, each with the request id it belongs to."""

import logging
import sys
from contextvars import ContextVar

from .config import Settings

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
_FORMAT = "%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s"


class _RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served (or '-')."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def configure_logging(settings: Settings) -> None:
    """Send the app's and uvicorn's records to stdout in one format; safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.addFilter(_RequestIdFilter())
    for name in ("app", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(settings.log_level)
        logger.propagate = False
    # The access log middleware writes one line per request with its id; uvicorn's own would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
