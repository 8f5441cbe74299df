"""The advanced lab's settings: one Settings object, read once from the environment and `.env`."""

import json
from functools import lru_cache
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .agent import ChatModelOptions

DEFAULT_SECRET_KEY = "change-me-this-default-is-refused-in-production"  # noqa: S105 - the refused placeholder


class Settings(BaseSettings):
    """Every knob of the service; the names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # API
    api_title: str = "Agent API (advanced lab)"
    api_version: str = "2.0.0"
    api_prefix: str = "/api/v1"
    debug: bool = False
    environment: Literal["development", "test", "staging", "production"] = "development"

    # Server
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000", "http://127.0.0.1:3000"]
    max_request_bytes: int = Field(default=64 * 1024, ge=1024)

    # LLM
    llm_provider: Literal["offline", "openai"] = "offline"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_temperature: float = Field(default=0.0, ge=0, le=2)
    openai_max_tokens: int | None = Field(default=None, ge=1)
    openai_max_retries: int = Field(default=1, ge=0)
    agent_timeout_seconds: float = Field(default=30.0, gt=0)
    offline_llm_first_token_delay_ms: float = Field(default=120.0, ge=0)
    offline_llm_token_delay_ms: float = Field(default=20.0, ge=0)

    # Redis
    redis_url: str = "memory://"
    redis_enabled: bool = True
    redis_host: str = "127.0.0.1"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    redis_db: int = Field(default=0, ge=0)
    redis_password: SecretStr | None = None

    # Auth
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    access_token_expire_minutes: int = Field(default=30, ge=1)
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # How long a worker trusts the user row it read for a token: a deleted or disabled user is refused at the
    # latest this many seconds later (0: read the database on every request).
    user_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # Rate limit
    rate_limit_enabled: bool = True
    rate_limit_requests: int = Field(default=60, ge=1)
    rate_limit_window: int = Field(default=60, ge=1)
    # Failed logins per username (from any address) within the window before that username is refused with 429
    login_max_failures: int = Field(default=5, ge=1)
    login_failure_window: int = Field(default=300, ge=1)

    # Cache
    cache_enabled: bool = True
    cache_ttl: int = Field(default=300, ge=1)

    # Monitoring
    metrics_enabled: bool = True
    tracing_enabled: bool = False
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "agent-api"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # LangSmith (read by LangChain itself from the environment; listed so that .env documents them)
    langsmith_tracing: bool = False
    langsmith_api_key: SecretStr | None = None
    langsmith_project: str = "agent-deploy-labs"

    # Database: users, session metadata, background tasks and the LangGraph checkpoints
    database_url: str = "sqlite+aiosqlite:///./lab.db"

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a comma-separated list as well as a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object, info: object) -> object:
        if not isinstance(value, str):
            return value
        return value.upper() if getattr(info, "field_name", "") == "log_level" else value.lower()

    @model_validator(mode="after")
    def _refuse_default_secret_in_production(self) -> "Settings":
        # TODO 1: refuse to start in production with the default SECRET_KEY
        return self

    @property
    def effective_redis_url(self) -> str:
        """REDIS_URL, or one built from REDIS_HOST/PORT/DB/PASSWORD when REDIS_URL is empty."""
        if self.redis_url:
            return self.redis_url
        password = f":{quote(self.redis_password.get_secret_value())}@" if self.redis_password else ""
        return f"redis://{password}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def chat_model_options(self) -> ChatModelOptions:
        """The chat-model factory's options, from these settings."""
        return ChatModelOptions(
            provider=self.llm_provider,
            openai_api_key=self.openai_api_key,
            openai_base_url=self.openai_base_url,
            openai_model=self.openai_model,
            temperature=self.openai_temperature,
            max_tokens=self.openai_max_tokens,
            request_timeout_seconds=self.agent_timeout_seconds,
            max_retries=self.openai_max_retries,
            first_token_delay_ms=self.offline_llm_first_token_delay_ms,
            token_delay_ms=self.offline_llm_token_delay_ms,
        )


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
