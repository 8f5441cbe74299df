"""The database (advanced lab): Alembic's schema at its head revision, users and sessions kept as rows.

The grader owns the graded start's database: a SQLite file in its own folder, or, when it is given a PostgreSQL
server (GRADER_DATABASE_URL), also a throwaway database there, where the same checks and the checkpoints'
restart run once more. It reads them read-only, the way an operator would inspect a service's state; it never
imports the stage's code.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from .. import hints, postgres
from ..context import DEMO_USERS, Context
from ..core import ADVANCED, Failure, check
from ..expect import json_object, nonce, that
from .sessions import ask, introduce

SQLITE_URL = re.compile(r"^sqlite(\+\w+)?:///(?P<path>.+)$")
BCRYPT = re.compile(r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$")
VERSIONS = Path("migrations") / "versions"
ROW_WAIT_SECONDS = 3.0


async def query(ctx: Context, sql: str, *parameters: str) -> list[tuple[Any, ...]]:
    """Rows of a read-only query (`?` placeholders) on the graded start's database (Failure when unreadable)."""
    url = ctx.setup.env["DATABASE_URL"]
    if postgres.is_postgres(url):
        return await _postgres_query(url, sql, *parameters)
    match = SQLITE_URL.match(url)
    path = Path(match["path"]) if match else None
    if path is None or not path.is_file():
        cause = "the stage does not keep its data in the database that DATABASE_URL names"
        raise Failure(f"the SQLite database that DATABASE_URL names ({url})", "no such file", cause=cause)
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)) as connection:
            return connection.execute(sql, parameters).fetchall()
    except sqlite3.Error as error:
        raise Failure(f"an answer to {sql!r}", f"{type(error).__name__}: {error}") from None


async def _postgres_query(url: str, sql: str, *parameters: str) -> list[tuple[Any, ...]]:
    import psycopg  # with the server the grader was given

    try:
        return await asyncio.to_thread(postgres.rows, url, sql, *parameters)
    except psycopg.Error as error:
        raise Failure(f"an answer to {sql!r}", f"{type(error).__name__}: {str(error).strip()}") from None


async def _tables(ctx: Context) -> set[str]:
    if postgres.is_postgres(ctx.setup.env["DATABASE_URL"]):
        sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    return {str(row[0]) for row in await query(ctx, sql)}


def _assignment(node: ast.stmt) -> tuple[str, ast.expr] | None:
    """`name = value` or `name: type = value` at a module's top level, as (name, value)."""
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    return None


def _revisions(stage: Path) -> dict[str, tuple[str, ...]]:
    """Each revision of migrations/versions with the revisions it follows (read, never imported)."""
    found: dict[str, tuple[str, ...]] = {}
    for path in sorted((stage / VERSIONS).glob("*.py")):
        values: dict[str, Any] = {}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if (assigned := _assignment(node)) and assigned[0] in ("revision", "down_revision"):
                values[assigned[0]] = ast.literal_eval(assigned[1])
        if isinstance(values.get("revision"), str):
            down = values.get("down_revision")
            found[values["revision"]] = tuple(down) if isinstance(down, list | tuple) else (down,) if down else ()
    return found


def heads(stage: Path) -> set[str]:
    """The revisions no other revision follows: what `alembic upgrade head` leaves in alembic_version."""
    revisions = _revisions(stage)
    followed = {down for downs in revisions.values() for down in downs}
    return set(revisions) - followed


@check(2, labs=ADVANCED, public=True, hint=hints.MIGRATIONS)
async def migrated(ctx: Context) -> None:
    """The database is at the head revision of migrations/versions: its schema is Alembic's, not create_all's."""
    try:
        expected = heads(ctx.stage)
    except (OSError, SyntaxError, ValueError) as error:
        raise Failure("revisions readable in migrations/versions", f"{type(error).__name__}: {error}") from None
    that(expected, f"at least one revision in {VERSIONS.as_posix()}/", "none found")
    tables = await _tables(ctx)
    that(
        "alembic_version" in tables,
        f"an alembic_version table holding {', '.join(sorted(expected))}",
        f"no alembic_version table (tables: {', '.join(sorted(tables)) or 'none'})",
        cause="the tables were made some other way (metadata.create_all): no migration will ever run on them",
    )
    found = {str(row[0]) for row in await query(ctx, "SELECT version_num FROM alembic_version")}
    shown = ", ".join(sorted(found)) or "no revision"
    that(found == expected, f"alembic_version at {', '.join(sorted(expected))}", f"at {shown}")


@check(1, labs=ADVANCED, public=True, hint=hints.DATABASE_USERS)
async def users(ctx: Context) -> None:
    """The demo users are rows of the users table with bcrypt hashes, never the passwords; inactive is disabled."""
    tables, cause = await _tables(ctx), "the users live in the process's memory, not in the database"
    that(
        "users" in tables,
        "a users table (username, hashed_password, disabled)",
        f"tables: {sorted(tables)}",
        cause=cause,
    )
    rows = await query(ctx, "SELECT username, hashed_password, disabled FROM users")
    by_name = {str(row[0]): row for row in rows}
    missing = sorted(set(DEMO_USERS) - set(by_name))
    that(not missing, "rows for demo, alice and inactive", f"no row for {', '.join(missing)}")
    stored = {name: str(by_name[name][1]) for name in DEMO_USERS}
    wrong = {
        name: "the password itself" if value == DEMO_USERS[name] else f"{value[:8]!r}..."
        for name, value in stored.items()
        if not BCRYPT.match(value)
    }
    that(not wrong, "a bcrypt hash ($2b$...) in each hashed_password", f"{wrong}")
    disabled = {name: bool(by_name[name][2]) for name in DEMO_USERS}
    that(disabled == {"demo": False, "alice": False, "inactive": True}, "only inactive disabled", f"{disabled}")


async def _owners(ctx: Context, sessions: dict[str, str]) -> dict[str, str]:
    """Each session's owner column, once every one of them has a row (or when the wait is over)."""
    marks = ",".join("?" * len(sessions))
    rows: list[tuple[Any, ...]] = []
    for _ in range(int(ROW_WAIT_SECONDS / 0.1)):
        rows = await query(ctx, f"SELECT session_id, owner FROM sessions WHERE session_id IN ({marks})", *sessions)  # noqa: S608 - placeholders only
        if len(rows) == len(sessions):
            break
        await asyncio.sleep(0.1)
    return {str(row[0]): str(row[1]) for row in rows}


@check(2, labs=ADVANCED, depends_on=("api.query_shape",), hint=hints.DATABASE_SESSIONS)
async def sessions(ctx: Context) -> None:
    """A session demo starts and one alice starts are rows of the sessions table, each with its owner."""
    started: dict[str, str] = {}
    for user in ("demo", "alice"):
        session_id = f"grader-{nonce()}"
        headers = ctx.bearer(await ctx.token(user))
        request = {"query": f"Hello [{nonce()}]", "session_id": session_id}
        json_object(await ctx.anon.post("/api/v1/query", json=request, headers=headers))
        json_object(await ctx.anon.get(f"/api/v1/session/{session_id}", headers=headers))  # read back: it exists
        started[session_id] = user
    tables = await _tables(ctx)
    that("sessions" in tables, "a sessions table (session_id, owner, ...)", f"tables: {', '.join(sorted(tables))}")
    owners = await _owners(ctx, started)
    that(owners == started, f"rows with their owners: {started}", f"rows found: {owners or 'none'}")


# With a PostgreSQL server (GRADER_DATABASE_URL), the same checks on a start whose DATABASE_URL is a throwaway
# database there, and the checkpoints' restart on it: the path of TODO 24 and 29 that SQLite does not take.
if postgres.server():

    @check(2, labs=ADVANCED, public=True, profile="postgres", hint=hints.MIGRATIONS)
    async def postgres_migrated(ctx: Context) -> None:
        """On PostgreSQL too, the database is at the head revision of migrations/versions (Alembic's schema)."""
        await migrated(ctx)

    @check(1, labs=ADVANCED, public=True, profile="postgres", hint=hints.DATABASE_USERS)
    async def postgres_users(ctx: Context) -> None:
        """On PostgreSQL too, the demo users are rows of the users table with bcrypt hashes; inactive is disabled."""
        await users(ctx)

    @check(2, labs=ADVANCED, profile="postgres", depends_on=("api.query_shape",), hint=hints.DATABASE_SESSIONS)
    async def postgres_sessions(ctx: Context) -> None:
        """On PostgreSQL too, a session demo starts and one alice starts are rows of the sessions table."""
        await sessions(ctx)

    @check(2, labs=ADVANCED, profile="postgres", depends_on=("sessions.continuity",), hint=hints.CHECKPOINTS)
    async def postgres_continuity(ctx: Context) -> None:
        """On PostgreSQL, a second query with the same session_id remembers the first (checkpoints there)."""
        session_id, name = await introduce(ctx)
        answer = (await ask(ctx, "What is my name?", session_id))["response"]
        that(name in answer, f"an answer naming {name}", repr(answer), cause="the checkpointer fails on PostgreSQL")
        ctx.remember("postgres-session", (session_id, name))

    @check(3, labs=ADVANCED, profile="postgres_restart", depends_on=("postgres_continuity",), hint=hints.CHECKPOINTS)
    async def postgres_survives_restart(ctx: Context) -> None:
        """On PostgreSQL, a conversation survives a restart: the session and the agent's memory are back."""
        session_id, name = ctx.recall("postgres-session")
        restarted = "sessions or checkpoints kept in the process's memory, not in PostgreSQL"
        body = json_object(await ctx.api.get(f"/api/v1/session/{session_id}"), cause=restarted)
        count = body.get("message_count")
        that(count == 4, "the session's 4 messages", f"message_count {count!r}", cause=restarted)
        answer = (await ask(ctx, "What is my name?", session_id))["response"]
        that(name in answer, f"an answer that still knows {name}", repr(answer), cause=restarted)
