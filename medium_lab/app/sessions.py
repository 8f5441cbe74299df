"""Session bookkeeping: when each conversation started and changed, and one lock per conversation.

The messages themselves live in the graph's checkpointer; this store keeps the metadata the API lists,
and the locks make concurrent requests to one session take turns, so no message is lost.
"""

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass
class SessionRecord:
    """What the API reports about a session besides its messages."""

    session_id: str
    created_at: datetime
    updated_at: datetime
    message_count: int


class SessionStore:
    """In-memory session metadata and locks (the medium lab keeps sessions in one process)."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock(self, session_id: str) -> asyncio.Lock:
        """The lock that serialises the turns of one session."""
        # TODO 6: give each session one lock that all its requests share
        return asyncio.Lock()

    def forget_lock_if_unused(self, session_id: str) -> None:
        """Drop the lock of a session that was never saved (its first turn failed)."""
        lock = self._locks.get(session_id)
        if lock is not None and not lock.locked() and session_id not in self._records:
            del self._locks[session_id]

    def get(self, session_id: str) -> SessionRecord | None:
        """The session's record, or None."""
        return self._records.get(session_id)

    def record_turn(self, session_id: str, message_count: int) -> SessionRecord:
        """Note a finished turn, creating the session on its first."""
        now = datetime.now(UTC)
        record = self._records.get(session_id)
        if record is None:
            record = self._records[session_id] = SessionRecord(session_id, now, now, message_count)
        record.updated_at, record.message_count = now, message_count
        return record

    def list(self) -> list[SessionRecord]:
        """Every session, the most recently active first."""
        return sorted(self._records.values(), key=lambda record: record.updated_at, reverse=True)

    def delete(self, session_id: str) -> bool:
        """Forget a session; False if there was none."""
        self._locks.pop(session_id, None)
        return self._records.pop(session_id, None) is not None
