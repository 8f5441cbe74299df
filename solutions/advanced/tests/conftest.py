"""Fixtures for the advanced solution's tests: settings from keyword arguments, the app with its lifespan."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support.services import RedisServer, redis_server


def make_settings(database: Path, **overrides: Any) -> Settings:
    """Settings for a test: a database file of its own, a fast model, cheap bcrypt, quiet logs."""
    values: dict[str, Any] = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "offline_llm_first_token_delay_ms": 5,
        "offline_llm_token_delay_ms": 1,
        "bcrypt_rounds": 4,
        "log_level": "WARNING",
        "rate_limit_requests": 10_000,
        "secret_key": "test-secret-key",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "lab.db"


@pytest.fixture
def settings(database: Path) -> Settings:
    return make_settings(database)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A throwaway real redis-server."""
    with redis_server() as server:
        yield server


def login(client: TestClient, username: str = "demo", password: str | None = None) -> dict[str, str]:
    """Authorization headers for a demo user."""
    response = client.post(
        "/api/v1/auth/login", data={"username": username, "password": password or f"{username}-password"}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = series.partition("{")
        if sample_name == name and ",".join(sorted(sample_labels.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0
