"""Health: each dependency's status, and the service's overall state with the right status code."""

from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.support.openai_server import run_openai_test_server
from tests.support.services import drop_database, postgres_database

from .conftest import make_settings


def test_healthy_reports_each_dependency(client: TestClient) -> None:
    """All up: healthy, with Redis's latency, the LLM and the database."""
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert set(body["dependencies"]) == {"redis", "llm", "database"}
    assert body["dependencies"]["redis"]["latency_ms"] >= 0
    assert body["dependencies"]["database"]["status"] == "up"
    assert body["version"] == "2.0.0"


def test_database_down_is_unhealthy_503() -> None:
    """When the database goes away (a real PostgreSQL database, dropped), health is unhealthy with 503."""
    with postgres_database() as url:
        settings = make_settings(Path("unused"), database_url=url)
        with TestClient(create_app(settings)) as client:
            assert client.get("/health").json()["dependencies"]["database"]["detail"] == "postgresql"
            drop_database(url)
            response = client.get("/health")
            body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unhealthy"
    assert body["dependencies"]["database"]["status"] == "down"


def test_unreachable_llm_provider_is_degraded(tmp_path: Path) -> None:
    """An OpenAI-compatible server that refuses the key makes health degraded (still 200)."""
    with run_openai_test_server(mode="unauthorized") as llm:
        settings = make_settings(
            tmp_path / "h.db", llm_provider="openai", openai_base_url=llm.base_url, openai_api_key="k"
        )
        with TestClient(create_app(settings)) as client:
            body = client.get("/health").json()
    assert body["status"] == "degraded"
    assert body["dependencies"]["llm"]["status"] == "down"


def test_reachable_llm_provider_is_up(tmp_path: Path) -> None:
    """A working OpenAI-compatible server is up, probed once and remembered."""
    with run_openai_test_server() as llm:
        settings = make_settings(tmp_path / "h.db", llm_provider="openai", openai_base_url=llm.base_url)
        with TestClient(create_app(settings)) as client:
            first = client.get("/health").json()
            client.get("/health")
    assert first["dependencies"]["llm"]["status"] == "up", first
    assert first["status"] == "healthy"
    assert len(llm.model_requests) == 1


def test_health_never_shows_the_redis_password(tmp_path: Path) -> None:
    """The Redis URL in /health loses its password (here Redis is unreachable, so the detail names the URL)."""
    settings = make_settings(tmp_path / "p.db", redis_url="redis://:s3cret-redis-pass@127.0.0.1:1/0")
    with TestClient(create_app(settings)) as client:
        body = client.get("/health")
    assert body.json()["dependencies"]["redis"]["status"] == "down"
    assert "127.0.0.1:1/0" in body.json()["dependencies"]["redis"]["detail"]
    assert "s3cret-redis-pass" not in body.text
