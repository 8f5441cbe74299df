"""Broken copies of the stand-in advanced stage (`advanced_mini/`), and the checks each must lose."""

from pathlib import Path

from tests.support.grading import BrokenStage

MINI = Path(__file__).parent / "advanced_mini"
ADVANCED_ONLY = (
    *("auth", "caching", "rate_limit", "metrics", "logging", "config", "tracing"),
    *("api.health_dependencies", "api.redis_down", "sessions.survives_restart"),
)
MAIN, SECURITY, SERVICE, OBSERVE = "app/main.py", "app/security.py", "app/service.py", "app/observability.py"
CONFIG = "app/config.py"
DOUBLE_COUNT_AND_PRINT = """HTTP_REQUESTS.labels(scope["method"], endpoint, str(status)).inc(2)
        print("served", scope["path"], flush=True)"""

STAGES = [
    BrokenStage(
        "login-accepts-any-password-and-lax-tokens",
        {
            SECURITY: [
                ("if user is None or not hmac.compare_digest(user.password, password):", "if user is None:"),
                ('if not hmac.compare_digest(_unb64(signature), _signature(f"{header}.{payload}", key)):', "if False:"),
                ("    if user.disabled:", "    if False:"),
            ],
            SERVICE: [("if session is None or session.owner != user:", "if session is None:")],
            MAIN: [
                ('"full_name": user.full_name, "disabled": user.disabled}', '"disabled": user.disabled}'),
                ('"Not authenticated", UNAUTHORIZED)', '"Not authenticated")'),
            ],
            OBSERVE: [
                (
                    "from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram",
                    "from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary",
                ),
                (
                    'AGENT_DURATION = Histogram("agent_execution_duration_seconds"',
                    'AGENT_DURATION = Summary("agent_execution_duration_seconds"',
                ),
            ],
        },
        only=("auth", "metrics.names_types"),
        failed=(
            "auth.login_failures",
            "auth.me",
            "auth.no_token",
            "auth.bad_tokens",
            "auth.inactive_user",
            "auth.ownership",
            "metrics.names_types",
        ),
        lab="advanced",
    ),
    BrokenStage(
        "login-without-expiry-metrics-as-json-health-without-database",
        {
            MAIN: [
                (', "expires_in": settings.token_minutes * 60}', "}"),
                ("media_type=CONTENT_TYPE_LATEST)", 'media_type="application/json")'),
                ('"llm": up, "database": up}', '"llm": up}'),
            ],
        },
        only=("auth", "metrics", "api.health_dependencies"),
        failed=("auth.login", "metrics.exposition", "api.health_dependencies"),
        skipped=(
            "api.query_shape",
            "auth.login_failures",
            "auth.me",
            "auth.bad_tokens",
            "auth.inactive_user",
            "auth.ownership",
            "metrics.names_types",
            "metrics.route_templates",
            "metrics.counters_move",
        ),
        lab="advanced",
    ),
    BrokenStage(
        "cache-keyed-on-the-query-alone-and-no-span-exported",
        {
            OBSERVE: [("    if not endpoint:\n        return None", "    if True:\n        return None")],
            SERVICE: [
                (
                    'json.dumps([query.strip().lower(), max_iterations, "offline", "mini-model", history])',
                    "json.dumps([query.strip().lower()])",
                ),
                ("            CACHE_HITS.inc()\n", '            AGENT_RUNS.labels(status="success").inc()\n'),
            ],
        },
        only=("caching", "tracing"),
        failed=(
            "tracing.spans_exported",
            "caching.hit_skips_agent",
            "caching.context_safe",
            "caching.key_covers_max_iterations",
            "caching.cache_metrics",
        ),
        skipped=("tracing.node_spans", "tracing.trace_ids_in_logs"),
        lab="advanced",
    ),
    BrokenStage(
        "no-cache-and-a-limit-per-address-that-covers-metrics",
        {
            SERVICE: [("cached = key in self.cache", "cached = False")],
            OBSERVE: [
                ('if scheme.lower() == "bearer" and token:', "if False:"),
                ('"/openapi.json", "/api/v1/metrics"}', '"/openapi.json"}'),
            ],
        },
        only=("caching", "rate_limit"),
        failed=("caching.miss_then_hit", "rate_limit.exempt", "rate_limit.per_user"),
        skipped=(
            "caching.hit_skips_agent",
            "caching.context_safe",
            "caching.key_covers_max_iterations",
            "caching.cache_metrics",
        ),
        lab="advanced",
    ),
    BrokenStage(
        "raw-path-labels-double-counts-plain-logs-and-health-blind-to-redis",
        {
            OBSERVE: [
                ('endpoint = getattr(scope.get("route"), "path", "unmatched")', 'endpoint = scope["path"]'),
                (
                    'HTTP_REQUESTS.labels(scope["method"], endpoint, str(status)).inc()',
                    DOUBLE_COUNT_AND_PRINT,
                ),
            ],
            MAIN: [('status = "healthy" if redis["status"] == "up" else "degraded"', 'status = "healthy"')],
        },
        only=("metrics", "logging.json_lines", "api.redis_down"),
        failed=("metrics.route_templates", "metrics.counters_move", "logging.json_lines", "api.redis_down"),
        lab="advanced",
    ),
    BrokenStage(
        "logs-with-local-time-no-duration-and-the-token",
        {
            OBSERVE: [
                (
                    'record = {"timestamp": datetime.now(UTC).isoformat(),',
                    'record = {"timestamp": datetime.now().isoformat(),',
                ),
                (
                    "            duration_ms=round(elapsed * 1000, 2),\n",
                    '            authorization=Headers(scope=scope).get("authorization"),\n',
                ),
            ],
        },
        only=("logging",),
        failed=("logging.fields", "logging.access_line", "logging.no_secrets"),
        lab="advanced",
    ),
    BrokenStage(
        "production-takes-the-default-secret-sessions-in-memory-unnamed-nodes-no-trace-ids",
        {
            CONFIG: [
                (
                    'if env.get("ENVIRONMENT") == "production" and',
                    'if False and env.get("ENVIRONMENT") == "production" and',
                )
            ],
            SERVICE: [
                ("self.sessions: dict[str, Session] = self.load()", "self.sessions: dict[str, Session] = {}"),
                ('start_as_current_span("agent.node.supervisor")', 'start_as_current_span("supervisor")'),
                ('start_as_current_span("agent.node.writer")', 'start_as_current_span("writer")'),
            ],
            OBSERVE: [('record["trace_id"] = format(', 'record["span_trace"] = format(')],
        },
        only=("config", "tracing", "sessions.survives_restart"),
        failed=(
            "config.production_secret",
            "sessions.survives_restart",
            "tracing.node_spans",
            "tracing.trace_ids_in_logs",
        ),
        lab="advanced",
    ),
]
