"""Where a student should look when a check fails: the `look at:` line, with the lab's TODO number.

One place for every hint, so that renumbering a starter's TODOs is one edit here. A hint is either text for
both labs, or a text per lab: the medium lab's TODOs are given code in the advanced starter, so there a hint
names the file and function without the medium lab's TODO number.
"""

from .core import Hint


def medium_todo(number: str, where: str) -> Hint:
    """A TODO of the medium lab, which is given code in the advanced one."""
    return {"medium": f"TODO {number}: {where}", "advanced": where}


def advanced_todo(number: str, where: str) -> Hint:
    return f"TODO {number}: {where}"


# Both labs: the service
SERVICE_ROUTES = "app/main.py: the / and /health routes (RootInfo, HealthResponse in app/models.py)"
DOCS = "app/docs.py: install_docs, called by create_app in app/main.py (the pages and their /docs-assets)"
OPENAPI_ROUTES = "app/routes/agent.py: the router's endpoints (each registered and included in the schema)"
ERROR_DOCS = "app/routes/agent.py: each route's `responses=` (an ErrorResponse for 404, 422, 429, 502, 504)"
MODEL_EXAMPLES = medium_todo("14", "app/models.py: each model's example (_examples)")
QUERY: Hint = {
    "medium": "TODO 1: app/routes/agent.py: query (the JSON answer is the service's process_query)",
    "advanced": "app/agent_service.py: process_query, and app/routes/agent.py: query",
}
TOKENS = medium_todo("2", "app/agent_service.py: _chunks (the writer's streamed messages become tokens)")
MAX_ITERATIONS = medium_todo("3", "app/agent_service.py: _graph_events (recursion_limit from max_iterations)")
REQUEST_ID = medium_todo("7", "app/middleware.py: RequestIdMiddleware (send_with_id)")
STREAM = medium_todo("4", "app/agent_service.py: stream_query (start, tokens and steps, one done or error last)")
REAL_STREAM = medium_todo("2 and 4", "app/agent_service.py: _chunks and stream_query (yield as the writer writes)")
STREAM_FLAG = medium_todo("1", "app/routes/agent.py: query (the `stream: true` branch)")
SESSIONS = "app/agent_service.py: the checkpointer's thread_id is the session id"
SESSION_INFO = medium_todo("5", "app/agent_service.py: get_session_info (the messages from the checkpointer)")
SESSION_ROUTES = "app/routes/agent.py: get_session, list_sessions, delete_session"
SESSION_DELETE = "app/agent_service.py: clear_session (delete the checkpoints too, not only the record)"
SESSION_LOCK = medium_todo("6", "app/sessions.py: SessionStore.lock (one lock per session, shared by its requests)")
TASKS = medium_todo("13", "app/routes/agent.py: create_task (start the run in the background, answer 202 at once)")
ERROR_HANDLERS = medium_todo("11", "app/error_handlers.py: install_error_handlers")
VALIDATION = medium_todo("9", "app/models.py: QueryRequest (the fields' limits and pattern)")
SANITISE = medium_todo("10", "app/models.py: QueryRequest._sanitise (strip, remove control characters)")
QUERY_BOUNDS = medium_todo(
    "9 and 10", "app/models.py: QueryRequest.query (min_length, max_length), and _sanitise, which runs first"
)
TIMEOUT = medium_todo("12", "app/agent_service.py: _graph_events (asyncio.timeout with AGENT_TIMEOUT_SECONDS)")
UPSTREAM = "app/agent_service.py: _translate (a provider's errors become UpstreamError, 502)"
# The JSON 502 is an ErrorResponse only once the domain errors have their handler.
UPSTREAM_ANSWER: Hint = {
    "medium": f"TODO 11: app/error_handlers.py: install_error_handlers, and {UPSTREAM}",
    "advanced": UPSTREAM,
}
CONCURRENCY: Hint = {
    "medium": "TODO 1 and 6: app/routes/agent.py, app/agent_service.py and app/sessions.py: nothing blocking, "
    "no lock shared by all",
    "advanced": "app/agent_service.py and app/sessions.py: nothing blocking, no lock shared by all",
}
RATE_LIMIT: Hint = {
    "medium": "TODO 8: app/middleware.py: RateLimitMiddleware._admit (a sliding window per client)",
    "advanced": "TODO 16: app/rate_limit.py: RateLimiter.hit (one atomic step in Redis)",
}
RETRY_AFTER: Hint = {
    "medium": "TODO 8: app/middleware.py: RateLimitMiddleware._admit (its reset is the 429's Retry-After)",
    "advanced": "TODO 18: app/middleware.py: RateLimitMiddleware (429 with Retry-After)",
}
EXEMPT: Hint = {
    "medium": "app/main.py: UNLIMITED_PATHS, passed to RateLimitMiddleware",
    "advanced": "TODO 19: app/main.py: the paths the rate limit leaves alone",
}

# Advanced lab
CONFIG = advanced_todo("1", "app/config.py: refuse the default SECRET_KEY when ENVIRONMENT=production")
LOGGING = advanced_todo("2", "app/logging_config.py: configure_logging (JSON lines unless LOG_FORMAT=console)")
ACCESS_LOG = advanced_todo("3 and 4", "app/middleware.py: the request's log context and its one access line")
SECRETS_IN_LOGS = "app/logging_config.py: redact_secrets; never log headers, form bodies or tokens"
CACHE = advanced_todo("5, 6 and 8", "app/cache.py: get and set, and app/agent_service.py: answer from the cache")
CACHE_KEY = advanced_todo("7", "app/cache.py: response_cache_key (query, max_iterations, model, the conversation)")
CACHE_HIT = advanced_todo("8", "app/agent_service.py: on a hit, answer from the cache without running the agent")
AUTH_LOGIN = advanced_todo("9 and 10", "app/auth.py: authenticate_user and create_access_token")
AUTH_PASSWORD = advanced_todo("9", "app/auth.py: authenticate_user (a dummy hash for unknown users)")
AUTH_VERIFY = advanced_todo("11", "app/auth.py: verify the token (SECRET_KEY, algorithms=[ALGORITHM], exp)")
AUTH_ACTIVE = advanced_todo("12", "app/auth.py: refuse inactive users (403 forbidden)")
OWNERSHIP = advanced_todo("13 to 15", "another user's session and task are not found; list only the caller's")
RATE_LIMIT_USER = advanced_todo("17", "app/middleware.py: count by the user from the token, else the address")
METRICS = "app/monitoring.py: Metrics (names and types), and app/routes/metrics.py"
METRICS_LABELS = advanced_todo("20", "app/monitoring.py: label `endpoint` with the route template")
AGENT_RUNS = advanced_todo("21", "app/monitoring.py: count and time agent runs")
HEALTH_DEPENDENCIES = advanced_todo("22", "app/health.py: ping Redis (and the database) with its latency")
REDIS_DOWN = advanced_todo("23", "app/health.py: degraded when Redis is down; the cache and the limiter fail open")
CHECKPOINTS = advanced_todo("24", "app/checkpoints.py: the checkpointer on the database, not in memory")
TRACING_EXPORT = advanced_todo("25", "app/tracing.py: an OTLP/HTTP exporter to OTEL_EXPORTER_OTLP_ENDPOINT")
TRACING_NODES = advanced_todo("26", "app/tracing.py: a span per graph node, named agent.node.<node>")
TRACING_LOGS = advanced_todo("27", "app/logging_config.py: the current span's trace id in every log line")
IMAGE_COMMAND = advanced_todo("28", "Dockerfile: the runtime stage's CMD (exec form: python -m app.serve)")
IMAGE_SHAPE = advanced_todo("28", "Dockerfile: the runtime stage's USER, ENV HOST and PORT, EXPOSE and HEALTHCHECK")
IMAGE_SERVES = advanced_todo("28", "Dockerfile: a CMD that serves on HOST and PORT from the environment")
IMAGE_WORKERS = advanced_todo("28", "Dockerfile: ENV WORKERS (more than 1) and PROMETHEUS_MULTIPROC_DIR for app.serve")
MIGRATIONS = advanced_todo("29", "app/database.py: migrate (Alembic's upgrade to head at start-up)")
DATABASE_USERS = "app/auth.py: seed_demo_users (bcrypt hashes in the users table)"
DATABASE_SESSIONS = "app/sessions.py: each session's row, with its owner"
LOAD_RUN = "locustfile.py: the simulated user's tasks, and the service's answers under load"
LOAD_BUDGET = advanced_todo("30", "locustfile.py: enforce_budgets (LOAD_MAX_ERROR_RATE, LOAD_MAX_P95_MS)")
