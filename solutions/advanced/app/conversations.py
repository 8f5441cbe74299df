"""Where sessions live: their rows, their messages in the graph's checkpoints, first turns still pending in
Redis (see pending_turns), and the active_sessions gauge that counts them all."""

import contextlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from redis.exceptions import RedisError

from .agent_runs import ANSWER_NODE, thread
from .cache import CacheRead
from .exceptions import SessionNotFoundError
from .logging_config import get_logger
from .monitoring import Metrics
from .pending_turns import PendingTurns
from .sessions import SessionRecord, SessionStore

logger = get_logger(__name__)
RECOUNT_SECONDS = 1.0  # counting sessions scans their table: at most this often


class Conversations:
    """The sessions of the agent service, whichever of their three places each part is in."""

    def __init__(
        self,
        graph: CompiledStateGraph[Any, Any, Any, Any],
        checkpointer: BaseCheckpointSaver[Any],
        sessions: SessionStore,
        metrics: Metrics,
        pending: PendingTurns | None = None,
    ) -> None:
        self.graph, self.checkpointer, self.sessions = graph, checkpointer, sessions
        self.metrics, self.pending = metrics, pending
        self._last_recount, self._count = -1.0, 0

    def lock(self, session_id: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the session for one turn (see SessionStore.lock)."""
        return self.sessions.lock(session_id)

    async def record(self, session_id: str) -> SessionRecord | None:
        """The session's record, writing its pending turn first if it has one. Not under the session's lock."""
        record = await self.sessions.get(session_id)
        if record is None and await self.fold(session_id):
            record = await self.sessions.get(session_id)
        return record

    async def messages(self, session_id: str) -> list[BaseMessage]:
        """The session's conversation, from its latest checkpoint."""
        state = await self.graph.aget_state(thread(session_id))
        return list(state.values.get("messages", []))

    async def list(self, owner: str) -> list[SessionRecord]:
        """The owner's sessions, the most recently active first, pending ones included."""
        if self.pending is not None:
            try:
                for session_id in await self.pending.of_owner(owner):
                    await self.fold(session_id)
            except RedisError as exc:
                logger.warning("pending turns unreachable; listing what the database has", error=type(exc).__name__)
        return await self.sessions.list(owner)

    async def delete(self, session_id: str) -> None:
        """Forget the session: its checkpoints and its row."""
        async with self.lock(session_id):
            await self.checkpointer.adelete_thread(session_id)
            await self.sessions.delete(session_id)
        await self.recount()

    async def add_turn(self, session_id: str, owner: str, turn: Sequence[BaseMessage]) -> None:
        """Append a turn that did not run the graph (a cached answer), under the session's lock; a session
        someone else took meanwhile is not found."""
        async with self.lock(session_id):
            record = await self.sessions.get(session_id)
            if record is not None and record.owner != owner:
                raise SessionNotFoundError(session_id)
            await self.graph.aupdate_state(thread(session_id), {"messages": list(turn)}, as_node=ANSWER_NODE)
            await self.record_turn(session_id, owner)

    def first_turn_reader(self, session_id: str, owner: str, question: str) -> CacheRead | None:
        """For the cache read of a request that creates its session: a read that, on a hit, also records the
        session's first turn (the question and the cached answer) to be written behind, in the same Redis
        round trip (pending_turns). None when turns are written at once.

        If the read fails, the cache treats it as a miss: the agent runs, and writes the turn itself.
        """
        pending = self.pending
        if pending is None:
            return None

        async def read(cache_key: str) -> bytes | None:
            question_id = secrets.token_hex(16)
            cached = await pending.record_on_hit(
                cache_key, session_id=session_id, owner=owner, question=question, question_id=question_id
            )
            if cached is not None:
                self._one_more()  # the session exists from now on; a later recount includes it
            return cached

        return read

    async def fold(self, session_id: str) -> bool:
        """Write the session's pending turn to its checkpoint and row; False if it had none.

        Safe to repeat and to race: under the session's lock, and a turn already in the checkpoint (a crash
        between the writes) is not added twice.
        """
        if self.pending is None:
            return False
        try:
            turn = await self.pending.get(session_id)
        except RedisError as exc:
            logger.warning("pending turns unreachable", error=type(exc).__name__)
            return False
        if turn is None:
            return False
        async with self.lock(session_id):
            # A new session has no checkpoint: the cheap check. One that has must not get the turn twice.
            has_checkpoint = await self.checkpointer.aget_tuple(thread(session_id)) is not None
            conversation = await self.messages(session_id) if has_checkpoint else []
            message_count = len(conversation)
            if all(message.id != turn.question_id for message in conversation):
                messages = [HumanMessage(content=turn.question, id=turn.question_id), AIMessage(content=turn.answer)]
                await self.graph.aupdate_state(thread(session_id), {"messages": messages}, as_node=ANSWER_NODE)
                message_count += len(messages)
            record = await self.sessions.record_turn(session_id, turn.owner, message_count, at=turn.at)
            await self.pending.forget(turn)  # before a recount, which adds the pending ones
        if record.created_at == record.updated_at:
            await self._created(counted=True)
        return True

    async def record_turn(self, session_id: str, owner: str) -> None:
        """Note a finished turn in the session's row (created on its first), from the checkpoint's count."""
        record = await self.sessions.record_turn(session_id, owner, len(await self.messages(session_id)))
        if record.created_at == record.updated_at:
            await self._created(counted=False)

    async def rollback(self, session_id: str, question: HumanMessage) -> None:
        """Remove a failed turn from the conversation, so the session holds only whole turns.

        The messages are the checkpoint's own, not the state's: a run cancelled just after its writer answered
        leaves that answer as a pending write of the checkpoint. The state shows it, but removing it would fail
        (the update applies to the checkpoint), and the update's new checkpoint leaves it behind anyway.
        """
        saved = await self.checkpointer.aget_tuple(thread(session_id))
        messages = saved.checkpoint["channel_values"].get("messages", []) if saved else []
        ids = [m.id for m in messages if m.id]
        if question.id not in ids:
            return
        stale = ids[ids.index(question.id) :]
        await self.graph.aupdate_state(thread(session_id), {"messages": [RemoveMessage(id=i) for i in stale]})

    async def recount(self) -> None:
        """Set active_sessions from the database, and the sessions whose first turn is still pending."""
        self._last_recount = time.monotonic()
        pending = 0
        if self.pending is not None:
            with contextlib.suppress(RedisError):
                pending = await self.pending.count()
        self._count = await self.sessions.count() + pending
        self.metrics.active_sessions.set(self._count)

    async def _created(self, *, counted: bool) -> None:
        if time.monotonic() - self._last_recount >= RECOUNT_SECONDS:
            await self.recount()
        elif not counted:
            self._one_more()

    def _one_more(self) -> None:
        # set, not inc: multiprocess mode keeps the most recent value any worker wrote.
        self._count += 1
        self.metrics.active_sessions.set(self._count)
