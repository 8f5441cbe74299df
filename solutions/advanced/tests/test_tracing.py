"""Distributed tracing (exercise 1): spans for the request, the agent run and each graph node."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app import main
from app.tracing import create_tracer_provider

from .conftest import login, make_settings


def test_spans_cover_request_agent_run_and_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One trace holds the HTTP server span, `agent.run` and a span per node, nested; logs carry trace_id."""
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(main, "create_tracer_provider", lambda settings: create_tracer_provider(settings, exporter))
    settings = make_settings(tmp_path / "t.db", tracing_enabled=True, log_level="INFO")
    with TestClient(main.create_app(settings)) as client:
        headers = login(client)
        capsys.readouterr()
        assert client.post("/api/v1/query", json={"query": "What is 3 * 4?"}, headers=headers).status_code == 200
        logged = capsys.readouterr().out
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run = spans["agent.run"]
    nodes = [name for name in spans if name.startswith("agent.node.")]
    assert sorted(nodes) == ["agent.node.researcher", "agent.node.supervisor", "agent.node.tools", "agent.node.writer"]
    server = next(span for span in exporter.get_finished_spans() if span.name == "POST /api/v1/query")
    assert run.context.trace_id == server.context.trace_id
    assert all(spans[name].parent is not None and spans[name].parent.span_id == run.context.span_id for name in nodes)
    access = [json.loads(line) for line in logged.splitlines() if '"event":"request"' in line]
    assert access
    assert access[-1]["trace_id"] == format(server.context.trace_id, "032x")


def test_tracing_off_exports_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With TRACING_ENABLED=false no provider is made."""
    made: list[object] = []
    monkeypatch.setattr(main, "create_tracer_provider", lambda settings: made.append(settings))
    with TestClient(main.create_app(make_settings(tmp_path / "n.db"))) as client:
        client.get("/health")
    assert made == []
