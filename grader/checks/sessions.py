"""Conversations and background work: session memory, listing, deletion, concurrent turns, tasks."""

from __future__ import annotations

import asyncio
from typing import Any

from .. import hints
from ..context import Context
from ..core import ADVANCED, check
from ..expect import error_response, iso_timestamp, json_object, nonce, that

TASK_POLL_SECONDS = 15.0


async def ask(ctx: Context, query: str, session_id: str | None = None) -> dict[str, Any]:
    """A query's QueryResponse (Failure unless 200)."""
    request = {"query": query} | ({"session_id": session_id} if session_id else {})
    return json_object(await ctx.api.post("/api/v1/query", json=request))


async def introduce(ctx: Context) -> tuple[str, str]:
    """Start a session by giving a fresh name; returns (session_id, name)."""
    name = nonce().capitalize()
    body = await ask(ctx, f"My name is {name}.")
    return str(body["session_id"]), name


@check(3, depends_on=("api.tool_use",), hint=hints.SESSIONS)  # tool_use proves the writer's answer arrives
async def continuity(ctx: Context) -> None:
    """A second query with the same session_id remembers the first ("My name is ..." then "What is my name?")."""
    session_id, name = await introduce(ctx)
    body = await ask(ctx, "What is my name?", session_id)
    that(body["session_id"] == session_id, f"session_id {session_id!r} kept", repr(body["session_id"]))
    that(name in body["response"], f"an answer naming {name}", repr(body["response"]))
    ctx.remember("named-session", (session_id, name))


@check(2, depends_on=("continuity",), hint=hints.SESSION_INFO)
async def get_session(ctx: Context) -> None:
    """GET /api/v1/session/{id} answers a SessionInfo with the whole conversation."""
    session_id, name = ctx.recall("named-session")
    body = json_object(await ctx.api.get(f"/api/v1/session/{session_id}"))
    messages = body.get("messages") or []
    that(isinstance(messages, list) and len(messages) == 4, "4 messages (2 turns)", f"messages {messages!r:.200}")
    roles = [message.get("role") for message in messages]
    that(roles == ["user", "assistant"] * 2, "roles user, assistant, user, assistant", str(roles))
    asked = [messages[0].get("content"), messages[2].get("content")]
    that(asked == [f"My name is {name}.", "What is my name?"], "the two questions as asked", str(asked))
    that(body.get("message_count") == 4, "message_count 4", repr(body.get("message_count")))
    times = [body.get("created_at"), body.get("updated_at")]
    that(body.get("session_id") == session_id and all(map(iso_timestamp, times)), "ids and ISO 8601 times", str(times))


@check(2, depends_on=("continuity",), hint=hints.SESSION_ROUTES)
async def list_sessions(ctx: Context) -> None:
    """GET /api/v1/sessions lists the session, with a count that matches the list."""
    session_id, _ = ctx.recall("named-session")
    body = json_object(await ctx.api.get("/api/v1/sessions"))
    sessions = body.get("sessions") or []
    that(isinstance(sessions, list) and body.get("count") == len(sessions), "count = len(sessions)", f"{body!s:.200}")
    mine = [s for s in sessions if s.get("session_id") == session_id]
    that(mine and mine[0].get("message_count") == 4, f"{session_id} listed with message_count 4", f"{mine}")


# The GET after the DELETE must answer 404 not_found, which errors.unknown_session proves first.
@check(2, depends_on=("api.query_shape", "errors.unknown_session"), hint=hints.SESSION_ROUTES)
async def delete_session(ctx: Context) -> None:
    """DELETE /api/v1/session/{id} answers {session_id, deleted: true}; then GET answers 404."""
    session_id, name = await introduce(ctx)
    body = json_object(await ctx.api.delete(f"/api/v1/session/{session_id}"))
    that(body == {"session_id": session_id, "deleted": True}, "{session_id, deleted: true}", str(body))
    gone = await ctx.api.get(f"/api/v1/session/{session_id}")
    error_response(gone, 404, "not_found", cause="the delete answered but did not delete")
    listed = json_object(await ctx.api.get("/api/v1/sessions")).get("sessions") or []
    that(all(s.get("session_id") != session_id for s in listed), "the session gone from the list", "still listed")
    ctx.remember("deleted-session", (session_id, name))


@check(2, depends_on=("delete_session",), hint=hints.SESSION_DELETE)
async def delete_forgets(ctx: Context) -> None:
    """After DELETE, the same session id starts a fresh conversation: the agent has forgotten it."""
    session_id, name = ctx.recall("deleted-session")
    body = await ask(ctx, "What is my name?", session_id)
    that(name not in body["response"], f"an answer that no longer knows {name}", repr(body["response"]))


@check(2, depends_on=("get_session",), hint=hints.SESSION_LOCK)
async def concurrent_turns(ctx: Context) -> None:
    """Three concurrent queries to one session keep all three turns."""
    session_id = f"grader-{nonce()}"
    words = [nonce() for _ in range(3)]
    await asyncio.gather(*(ask(ctx, f"Remember the word {word}.", session_id) for word in words))
    body = json_object(await ctx.api.get(f"/api/v1/session/{session_id}"))
    asked = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    kept = [word for word in words if any(word in question for question in asked)]
    that(len(kept) == 3 and body.get("message_count") == 6, "3 turns (6 messages)", f"{len(kept)} questions kept")


@check(2, depends_on=("api.query_shape",), hint=hints.TASKS, retry=True)
async def task_accepted(ctx: Context) -> None:
    """POST /api/v1/tasks answers 202 at once with task_id, status pending and status_url."""
    response = await ctx.api.post("/api/v1/tasks", json={"query": f"What is 12 * 7? [{nonce()}]"})
    body = json_object(response, 202)
    that(body.get("status") == "pending" and body.get("task_id"), "task_id and status pending", str(body))
    that(isinstance(body.get("status_url"), str), "a status_url", str(body))
    early = json_object(await ctx.api.get(body["status_url"]))
    that(
        early.get("status") in {"pending", "running"},
        "the task still pending or running right after the 202",
        f"status {early.get('status')!r}",
        cause="the route waits for the agent before answering 202; start it with asyncio.create_task",
    )
    ctx.remember("task", body)


@check(2, depends_on=("task_accepted",), hint=hints.TASKS)
async def task_completes(ctx: Context) -> None:
    """Polling the status_url reaches completed, with the answer as result."""
    url = ctx.recall("task")["status_url"]
    body: dict[str, Any] = {}
    for _ in range(int(TASK_POLL_SECONDS / 0.1)):
        body = json_object(await ctx.api.get(url))
        if body.get("status") not in {"pending", "running"}:
            break
        await asyncio.sleep(0.1)
    that(body.get("status") == "completed", "status completed", f"{body}")
    result = body.get("result") or {}
    that("84" in str(result.get("response")), "result.response containing 84", f"result {result}")


@check(3, labs=ADVANCED, profile="restart", depends_on=("get_session",), hint=hints.CHECKPOINTS)
async def survives_restart(ctx: Context) -> None:
    """A conversation survives a restart: on the same database, the session and the agent's memory are back."""
    session_id, name = ctx.recall("named-session")
    restarted = "sessions or checkpoints kept only in the process's memory"
    body = json_object(await ctx.api.get(f"/api/v1/session/{session_id}"), cause=restarted)
    that(body.get("message_count") == 4, "the session's 4 messages", f"message_count {body.get('message_count')!r}")
    answer = (await ask(ctx, "What is my name?", session_id))["response"]
    that(name in answer, f"an answer that still knows {name}", repr(answer), cause=restarted)
