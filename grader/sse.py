"""Reading a Server-Sent Events answer as it arrives, noting when each event came."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

MAX_EVENTS = 5000
TERMINAL = ("done", "error")


@dataclass
class Event:
    """One SSE message: its `event:` name, its parsed `data:` (None if not JSON) and its arrival time."""

    name: str
    raw: str
    at: float

    @property
    def data(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.raw)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def content(self) -> str:
        value = (self.data or {}).get("content")
        return value if isinstance(value, str) else ""


@dataclass
class Stream:
    """A whole streamed answer: the response head, its events, and when the request was sent."""

    status_code: int
    content_type: str
    events: list[Event] = field(default_factory=list)
    body: str = ""  # the raw text, for feedback

    def named(self, name: str) -> list[Event]:
        return [event for event in self.events if event.name == name]

    @property
    def names(self) -> list[str]:
        return [event.name for event in self.events]

    def summary(self, ends: int = 4) -> str:
        """The events' names in order, the middle of a long stream elided."""
        names = self.names
        if not names:
            return f"no SSE events; body: {self.body[:200]!r}"
        shown = names if len(names) <= 2 * ends else [*names[:ends], "...", *names[-ends:]]
        return f"{len(names)} events [{', '.join(shown)}]"


async def read_stream(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Stream:
    """POST `body` to `path` and read the SSE answer event by event (bounded in count; the check bounds time)."""
    started = time.perf_counter()
    async with client.stream("POST", path, json=body, headers=headers) as response:
        stream = Stream(response.status_code, response.headers.get("content-type", ""))
        name, data, raw = "message", list[str](), list[str]()
        async for line in response.aiter_lines():
            raw.append(line)
            if line == "":
                if data:
                    stream.events.append(Event(name, "\n".join(data), time.perf_counter() - started))
                name, data = "message", []
                if len(stream.events) >= MAX_EVENTS:
                    break
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if data:
            stream.events.append(Event(name, "\n".join(data), time.perf_counter() - started))
        stream.body = "\n".join(raw)
    return stream
