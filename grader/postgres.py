"""PostgreSQL for the grader: throwaway databases on the server GRADER_DATABASE_URL names, and read-only queries.

Given a server (for example `postgresql://postgres@127.0.0.1:5432/postgres`, a role that may create databases),
the grader starts the advanced lab's stage once more on a database of its own there, made for that grade and
dropped after it; the database checks then read it as they read the SQLite file. psycopg comes with the dev
pins and the advanced lab's requirements; it is imported only when a server is given.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SERVER_VARIABLE = "GRADER_DATABASE_URL"
STAGE_DRIVER = "postgresql+asyncpg"  # what the labs' DATABASE_URL names (SQLAlchemy's asyncio driver)
CONNECT_TIMEOUT_SECONDS = 5
# The databases this process made and has not dropped yet: (server, name). Whatever a grade leaves (a restart
# that was never started) is dropped when the process exits.
_made: set[tuple[str, str]] = set()


class DatabaseServerError(Exception):
    """The server GRADER_DATABASE_URL names cannot be reached, or refuses to make or drop a database."""


def server() -> str:
    """The PostgreSQL server the grader was given ('' when none): GRADER_DATABASE_URL."""
    return os.environ.get(SERVER_VARIABLE, "").strip()


def _libpq(url: str) -> str:
    """The URL as libpq (psycopg) reads it: `postgresql://`, without SQLAlchemy's `+driver`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, name: str, scheme: str = STAGE_DRIVER) -> str:
    """The server's URL naming database `name` instead, with `scheme` (the stage's driver by default)."""
    return urlunsplit(urlsplit(url)._replace(scheme=scheme, path=f"/{name}"))


def database_name(grade_folder: str, owner: str) -> str:
    """The throwaway database's name for one grade (its data folder's name) and the profile that owns it."""
    return re.sub(r"[^a-z0-9_]", "_", f"grader_{grade_folder}_{owner}".lower())[:63]


_CREATE = "CREATE DATABASE {}"
_DROP = "DROP DATABASE IF EXISTS {} WITH (FORCE)"  # ends the connections a stopped stage may have left


def _on_database(url: str, statement: str, name: str) -> None:
    """Run `statement` (a template naming one database) as the server's URL's role, outside a transaction."""
    import psycopg  # only a grade given a server needs it
    from psycopg import errors, sql

    try:
        with psycopg.connect(_libpq(url), autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            connection.execute(sql.SQL(statement).format(sql.Identifier(name)))
    except errors.DuplicateDatabase:
        pass  # made already, by the other start that shares it
    except psycopg.Error as error:
        raise DatabaseServerError(f"{type(error).__name__}: {str(error).strip()}") from None


async def create(server: str, name: str) -> str:
    """Make database `name` on the server unless it is there already; its URL for the stage."""
    await asyncio.to_thread(_on_database, server, _CREATE, name)
    _made.add((server, name))
    return with_database(server, name)


async def drop(server: str, name: str) -> None:
    """Drop database `name`, and the connections to it."""
    await asyncio.to_thread(_on_database, server, _DROP, name)
    _made.discard((server, name))


@atexit.register
def _drop_leftovers() -> None:
    for server, name in sorted(_made):
        with contextlib.suppress(DatabaseServerError):  # the server went away: nothing more to do here
            _on_database(server, _DROP, name)
    _made.clear()


def rows(url: str, sql: str, *parameters: str) -> list[tuple[Any, ...]]:
    """The rows of a read-only query (`?` placeholders, as for SQLite) on the database `url` names."""
    import psycopg  # only a grade given a server needs it

    with psycopg.connect(_libpq(url), connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
        connection.read_only = True
        cursor = connection.execute(sql.replace("?", "%s"), parameters)
        return list(cursor.fetchall())


def is_postgres(url: str) -> bool:
    return urlsplit(url).scheme.split("+", 1)[0] in ("postgresql", "postgres")
