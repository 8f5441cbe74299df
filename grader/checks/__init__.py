"""The checks, one module per topic; importing this package registers them all, in grading order."""

from . import api, streaming, sessions, errors, load, rate_limit, auth, caching, metrics, logging, config, tracing  # noqa: F401, I001

TOPICS = (
    *("api", "streaming", "sessions", "errors", "load", "rate_limit"),
    *("auth", "caching", "metrics", "logging", "config", "tracing"),
)
