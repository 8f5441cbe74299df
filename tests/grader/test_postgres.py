"""The grader given a PostgreSQL server (GRADER_DATABASE_URL): the database and checkpoint checks run there too."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, unavailable
from tests.support.stage import ROOT

SERVER = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
ADVANCED = ROOT / "solutions" / "advanced"
POSTGRES_CHECKS = {
    "database.postgres_migrated",
    "database.postgres_users",
    "database.postgres_sessions",
    "database.postgres_continuity",
    "database.postgres_survives_restart",
}
# The solution's PostgreSQL branch of TODO 24, and the same branch keeping the checkpoints in memory.
POSTGRES_BRANCH = '    if url.get_backend_name() == "postgresql":\n'
IN_MEMORY = (
    POSTGRES_BRANCH
    + "        from langgraph.checkpoint.memory import InMemorySaver\n\n"
    + "        yield InMemorySaver()\n"
    + "        return\n"
)


@pytest.fixture
def server() -> str:
    with socket.socket() as sock:
        sock.settimeout(1)
        if sock.connect_ex((POSTGRES_HOST, POSTGRES_PORT)) != 0:
            unavailable(f"no PostgreSQL server at {POSTGRES_HOST}:{POSTGRES_PORT}")
    return SERVER


def _graders_databases() -> set[str]:
    import psycopg

    with psycopg.connect(SERVER, connect_timeout=5) as connection:
        rows = connection.execute("SELECT datname FROM pg_database WHERE datname LIKE 'grader_%'").fetchall()
    return {str(row[0]) for row in rows}


def _grade(stage: Path, only: str, server: str | None) -> tuple[int, dict[str, Any]]:
    env = {key: value for key, value in os.environ.items() if key != "GRADER_DATABASE_URL"}
    if server:
        env["GRADER_DATABASE_URL"] = server
    command = [sys.executable, "-m", "grader", str(stage), "--lab", "advanced", "--only", only, "--format", "json"]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert completed.stdout, completed.stderr
    return completed.returncode, json.loads(completed.stdout)


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in report["checks"]}


def _listed(server: str | None) -> set[str]:
    env = {key: value for key, value in os.environ.items() if key != "GRADER_DATABASE_URL"}
    if server:
        env["GRADER_DATABASE_URL"] = server
    command = [sys.executable, "-m", "grader", "--list", "--lab", "advanced"]
    listed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
    return {line.split()[1] for line in listed.stdout.splitlines()[:-1]}


def test_the_postgresql_checks_exist_only_when_the_grader_is_given_a_server() -> None:
    """Without GRADER_DATABASE_URL the advanced lab has no check on PostgreSQL (its points stay the same); with
    it, the five are added, and nothing else changes."""
    without, given = _listed(None), _listed(SERVER)
    assert not [name for name in without if "postgres" in name]
    assert given - without == POSTGRES_CHECKS and without <= given


def test_with_a_server_the_solution_passes_the_database_checks_on_postgresql_and_leaves_no_database(
    server: str,
) -> None:
    """Given the server, the database checks and the checkpoints' restart run on a throwaway PostgreSQL database
    too; the solution passes all of them, and the grader drops every database it made."""
    before = _graders_databases()
    status, report = _grade(ADVANCED, "database", server)
    results = _by_id(report)
    assert set(results) >= POSTGRES_CHECKS, sorted(results)
    assert status == 0, {name: entry["feedback"] for name, entry in results.items() if entry["status"] != "passed"}
    assert _graders_databases() - before == set()


def test_checkpoints_kept_in_memory_on_postgresql_fail_only_the_postgresql_restart(server: str, tmp_path: Path) -> None:
    """A stage whose checkpointer keeps PostgreSQL sessions in memory (SQLite's are in the file) passes the
    SQLite restart and fails the PostgreSQL one, pointing at TODO 24."""
    stage = tmp_path / "advanced"
    shutil.copytree(ADVANCED, stage, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.db"))
    checkpoints = stage / "app" / "checkpoints.py"
    source = checkpoints.read_text()
    assert source.count(POSTGRES_BRANCH) == 1
    checkpoints.write_text(source.replace(POSTGRES_BRANCH, IN_MEMORY))
    status, report = _grade(stage, "sessions.survives_restart,database.postgres_survives_restart", server)
    results = _by_id(report)
    assert status == 1
    assert results["sessions.survives_restart"]["status"] == "passed", results["sessions.survives_restart"]
    assert results["database.postgres_continuity"]["status"] == "passed", results["database.postgres_continuity"]
    failed = results["database.postgres_survives_restart"]
    assert failed["status"] == "failed" and "TODO 24" in failed["hint"], failed
