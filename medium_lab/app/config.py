"""The medium lab's settings, read once from the environment (and a `.env` file)."""

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .agent import ChatModelOptions


class Settings(BaseSettings):
    """Every knob of the service; the names are the environment variables, case-insensitive."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    api_title: str = "Agent API (medium lab)"
    api_version: str = "1.0.0"
    api_prefix: str = "/api/v1"
    debug: bool = False
    environment: Literal["development", "test", "staging", "production"] = "development"

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1)
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000", "http://127.0.0.1:3000"]

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

    rate_limit_enabled: bool = True
    rate_limit_requests: int = Field(default=60, ge=1)
    rate_limit_window: int = Field(default=60, ge=1)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    max_finished_tasks: int = Field(default=1000, ge=1)

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

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

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
