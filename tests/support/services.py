"""Throwaway real servers for tests: a redis-server on a free port, and a PostgreSQL database of our own.

Where the server is missing, a test using it is skipped with the reason, except in CI (CI=true), where it
fails: CI must exercise the real servers.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.stage import free_port, stop

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432


def unavailable(reason: str) -> None:
    """Skip with the reason outside CI; fail in CI, where every service-backed test is required."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@dataclass
class RedisServer:
    """A redis-server we started, and how to reach it."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop(self.process)

    def restart(self) -> None:
        """Start it again on the same port (after `stop`), empty."""
        self.process = _start_redis(self.port)


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process
        if process.poll() is not None:
            break
        time.sleep(0.02)
    stop(process)
    raise RuntimeError(f"redis-server did not start on port {port}")


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, stopped (by PID) afterwards."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    server = RedisServer(port := free_port(), _start_redis(port))
    try:
        yield server
    finally:
        server.stop()


def _postgres_reachable() -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((POSTGRES_HOST, POSTGRES_PORT)) == 0


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); yields its `postgresql+asyncpg://` URL."""
    if not _postgres_reachable():
        unavailable(f"no PostgreSQL server at {POSTGRES_HOST}:{POSTGRES_PORT}")
    import psycopg

    name = f"labs_test_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        unavailable(f"cannot create a PostgreSQL database as user postgres: {exc}")
    url = f"postgresql+asyncpg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    try:
        yield url
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    """Drop a database made by `postgres_database`, closing its connections first (may already be gone)."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = f"postgresql://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sqlite_write_lock_is_free(database: Path) -> bool:
    """True if a new connection can take the SQLite file's write lock at once: no connection is left inside a
    write transaction (it would make every other writer wait out its busy timeout)."""
    connection = sqlite3.connect(database, timeout=0)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        connection.close()
