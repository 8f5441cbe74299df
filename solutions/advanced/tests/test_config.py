"""Settings: every contract group, .env support, secrets kept secret, the production guard."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import DEFAULT_SECRET_KEY, Settings


def test_defaults_run_offline_with_embedded_services(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With no variables at all: offline model, embedded Redis, SQLite, the contract's defaults."""
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.llm_provider == "offline"
    assert settings.effective_redis_url == "memory://"
    assert settings.database_url.startswith("sqlite+aiosqlite")
    assert (settings.api_prefix, settings.rate_limit_requests, settings.rate_limit_window) == ("/api/v1", 60, 60)
    assert (settings.cache_ttl, settings.access_token_expire_minutes, settings.algorithm) == (300, 30, "HS256")
    assert (settings.agent_timeout_seconds, settings.log_format, settings.log_level) == (30, "json", "INFO")


def test_environment_and_env_file_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Variables come from the environment first, then from a .env file in the working folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("CACHE_TTL=42\nLOG_FORMAT=CONSOLE\nCORS_ORIGINS=http://a.test, http://b.test\n")
    monkeypatch.setenv("CACHE_TTL", "7")
    settings = Settings()
    assert settings.cache_ttl == 7
    assert settings.log_format == "console"
    assert settings.cors_origins == ["http://a.test", "http://b.test"]


def test_redis_url_is_built_from_parts_when_empty() -> None:
    """An empty REDIS_URL is built from REDIS_HOST, PORT, DB and PASSWORD (quoted)."""
    settings = Settings(
        _env_file=None, redis_url="", redis_host="cache", redis_port=6380, redis_db=2, redis_password="p@ss"
    )  # type: ignore[call-arg]
    assert settings.effective_redis_url == "redis://:p%40ss@cache:6380/2"


def test_secrets_do_not_show_in_repr() -> None:
    """SecretStr keeps keys out of reprs and logs."""
    settings = Settings(_env_file=None, secret_key="super-secret", openai_api_key="sk-123")  # type: ignore[call-arg]
    assert "super-secret" not in repr(settings)
    assert "sk-123" not in repr(settings)


def test_production_refuses_the_default_secret_key() -> None:
    """ENVIRONMENT=production with the default SECRET_KEY does not start; with a real one it does."""
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, environment="production")  # type: ignore[call-arg]
    assert (
        Settings(_env_file=None, environment="production", secret_key="x" * 32).secret_key.get_secret_value()
        != DEFAULT_SECRET_KEY
    )  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "value"), [("rate_limit_requests", 0), ("cache_ttl", -1), ("port", 70000), ("llm_provider", "x")]
)
def test_invalid_values_are_refused(name: str, value: object) -> None:
    """Out-of-range values fail at start-up with the field named."""
    with pytest.raises(ValidationError, match=name):
        Settings(_env_file=None, **{name: value})  # type: ignore[arg-type]
