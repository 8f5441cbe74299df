"""A fake agent with sessions per user, a response cache and background tasks."""

import asyncio
import hashlib
import json
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace

from .errors import ApiError
from .observability import ACTIVE_SESSIONS, AGENT_DURATION, AGENT_RUNS, CACHE_HITS, CACHE_MISSES

_PRODUCT = re.compile(r"(\d+)\s*\*\s*(\d+)")
_NAME_GIVEN = re.compile(r"my name is (\w+)", re.IGNORECASE)


@dataclass
class Session:
    owner: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    updated_at: str = ""
    messages: list[dict[str, str]] = field(default_factory=list)

    def info(self, session_id: str, with_messages: bool = True) -> dict[str, Any]:
        info: dict[str, Any] = {
            "session_id": session_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at or self.created_at,
            "message_count": len(self.messages),
        }
        return info | ({"messages": self.messages} if with_messages else {})


def _reply(query: str, history: list[dict[str, str]], max_iterations: int) -> str:
    if product := _PRODUCT.search(query):
        if max_iterations < 5:
            return f"I reached the limit of {max_iterations} step(s) before I could finish an answer."
        a, b = int(product.group(1)), int(product.group(2))
        return f"{a} * {b} = {a * b}."
    if name := _NAME_GIVEN.search(query):
        return f"Nice to meet you, {name.group(1)}."
    if "what is my name" in query.lower():
        names = [m.group(1) for msg in history if msg["role"] == "user" and (m := _NAME_GIVEN.search(msg["content"]))]
        return f"Your name is {names[-1]}." if names else "You have not told me your name yet."
    return f"You said: {query}"


class Service:
    def __init__(self, delay: float, sessions_file: Path | None = None) -> None:
        self.delay = delay
        self.sessions_file = sessions_file
        self.sessions: dict[str, Session] = self.load()
        self.cache: dict[str, str] = {}
        self.tasks: dict[str, tuple[str, dict[str, Any]]] = {}
        self.background: set[asyncio.Task[None]] = set()

    def load(self) -> dict[str, Session]:
        if self.sessions_file is None or not self.sessions_file.is_file():
            return {}
        return {sid: Session(**fields) for sid, fields in json.loads(self.sessions_file.read_text()).items()}

    def save(self) -> None:
        if self.sessions_file is not None:
            self.sessions_file.write_text(json.dumps({sid: asdict(s) for sid, s in self.sessions.items()}))

    def session(self, session_id: str, user: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None or session.owner != user:
            raise ApiError(404, "not_found", f"Session {session_id!r} not found")
        return session

    def cache_key(self, query: str, max_iterations: int, history: list[dict[str, str]]) -> str:
        material = json.dumps([query.strip().lower(), max_iterations, "offline", "mini-model", history])
        return hashlib.sha256(material.encode()).hexdigest()

    async def answer(self, user: str, query: str, session_id: str | None, max_iterations: int) -> dict[str, Any]:
        session_id = session_id or uuid.uuid4().hex
        existing = self.sessions.get(session_id)
        if existing is not None and existing.owner != user:
            raise ApiError(404, "not_found", f"Session {session_id!r} not found")
        session = existing or Session(owner=user)
        started = time.perf_counter()
        key = self.cache_key(query, max_iterations, session.messages)
        cached = key in self.cache
        if cached:
            CACHE_HITS.inc()
            text = self.cache[key]
        else:
            CACHE_MISSES.inc()
            tracer = trace.get_tracer("mini")
            with tracer.start_as_current_span("agent.node.supervisor"):
                await asyncio.sleep(self.delay / 2)
            with tracer.start_as_current_span("agent.node.writer"):
                await asyncio.sleep(self.delay / 2)
                text = self.cache[key] = _reply(query, session.messages, max_iterations)
            AGENT_RUNS.labels(status="success").inc()
            AGENT_DURATION.observe(time.perf_counter() - started)
        session.messages += [{"role": "user", "content": query}, {"role": "assistant", "content": text}]
        session.updated_at = datetime.now(UTC).isoformat()
        self.sessions[session_id] = session
        self.save()
        ACTIVE_SESSIONS.set(len(self.sessions))
        # A product is worked out by the researcher's calculator, as in the labs' graph.
        researched = bool(_PRODUCT.search(query)) and max_iterations >= 5
        agents = ["supervisor", "researcher", "writer"] if researched else ["writer"]
        metadata = {"provider": "offline", "model": "mini-model", "agents": agents, "cached": cached}
        metadata["tools_used"] = ["calculator"] if researched else []
        return {
            "response": text,
            "session_id": session_id,
            "execution_time": time.perf_counter() - started,
            "tokens_used": len(query.split()) + len(text.split()),
            "metadata": metadata,
        }

    def submit(self, user: str, query: str, max_iterations: int) -> str:
        task_id = uuid.uuid4().hex
        self.tasks[task_id] = (user, {"task_id": task_id, "status": "pending", "result": None, "error": None})

        async def run() -> None:
            self.tasks[task_id][1]["status"] = "running"
            result = await self.answer(user, query, None, max_iterations)
            self.tasks[task_id][1].update(status="completed", result=result)

        task = asyncio.create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task_id

    def task(self, task_id: str, user: str) -> dict[str, Any]:
        owner, status = self.tasks.get(task_id, ("", {}))
        if owner != user:
            raise ApiError(404, "not_found", f"Task {task_id!r} not found")
        return status
