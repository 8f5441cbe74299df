"""The checks, one module per topic; importing this package registers them all, in grading order."""

# The load test's runs (load_test, `alongside`) start once the checks that count requests and agent runs
# (caching, metrics) are done, and overlap the checks after them, config's production start included.
from . import (  # noqa: F401, I001 - importing registers the checks, in this order
    api,
    streaming,
    sessions,
    errors,
    load,
    rate_limit,
    auth,
    caching,
    metrics,
    load_test,
    logging,
    database,
    deploy,
    config,
    tracing,
)

TOPICS = (
    *("api", "streaming", "sessions", "errors", "load", "rate_limit"),
    *("auth", "caching", "metrics", "load_test", "logging", "database", "deploy", "config", "tracing"),
)
