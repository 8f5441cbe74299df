"""The agent behind the API: runs the graph for a query, streams it, caches answers and manages sessions."""

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from opentelemetry import trace

from .agent import build_agent_graph, create_chat_model, default_tools, model_name
from .agent_runs import AgentRunner, Run
from .auth import User
from .cache import CacheService, response_cache_key
from .config import Settings
from .conversations import Conversations
from .exceptions import AgentRunError, AgentTimeoutError, SessionNotFoundError
from .logging_config import get_logger
from .models import ChatMessage, QueryRequest, QueryResponse, SessionInfo, SessionSummary, StreamChunk
from .monitoring import Metrics
from .pending_turns import PendingTurns
from .sessions import SessionRecord, SessionStore
from .to_completion import to_completion

logger = get_logger(__name__)
CacheStatus = Literal["HIT", "MISS", "BYPASS"]


class AgentService:
    """Owns the chat model and the compiled graph; sessions and answers live in the database and Redis."""

    def __init__(
        self,
        settings: Settings,
        *,
        checkpointer: BaseCheckpointSaver[Any],
        sessions: SessionStore,
        cache: CacheService,
        metrics: Metrics,
        pending: PendingTurns | None = None,
        tracer: trace.Tracer | None = None,
        model: BaseChatModel | None = None,
    ) -> None:
        self.settings = settings
        self.model = model or create_chat_model(settings.chat_model_options())
        self.graph = build_agent_graph(self.model, default_tools(), checkpointer)
        self.conversations = Conversations(self.graph, checkpointer, sessions, metrics, pending)
        self.cache = cache
        self.metrics = metrics
        self.runner = AgentRunner(
            self.graph,
            timeout_seconds=settings.agent_timeout_seconds,
            provider=settings.llm_provider,
            tracer=tracer or trace.NoOpTracer(),
        )
        self.active_runs = 0
        self._unwinding: set[asyncio.Task[None]] = set()

    @property
    def provider(self) -> str:
        return self.settings.llm_provider

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    async def check_session(self, request: QueryRequest, user: User) -> QueryRequest:
        """The request as it is, once its session is known to be the user's (another user's is not found); a
        request without a session gets a new one when it runs."""
        if request.session_id is not None:
            record = await self.conversations.record(request.session_id)
            if record is not None and record.owner != user.username:
                raise SessionNotFoundError(request.session_id)
        return request

    async def prepare(self, request: QueryRequest, user: User) -> QueryRequest:
        """The request with its session: a new one, or one of the user's (another user's is not found)."""
        if request.session_id is None:
            return _in_new_session(request)
        return await self.check_session(request, user)

    async def process_query(self, request: QueryRequest, user: User) -> tuple[QueryResponse, CacheStatus]:
        """The answer, from the cache when an identical question met an identical context, else from a run."""
        fresh = request.session_id is None  # a session this request creates: no history, no one else's
        request = await self.prepare(request, user)
        session_id = cast(str, request.session_id)
        # TODO 8: answer from the cache on a hit (without running the agent), else run and store
        return await self._answer(request, user), "BYPASS"

    def _cache_key(self, request: QueryRequest, history: list[str]) -> str:
        return response_cache_key(
            self.cache,
            query=request.query,
            max_iterations=request.max_iterations,
            provider=self.provider,
            model=self.model_name,
            history=history,
        )

    async def stream_query(self, request: QueryRequest, user: User) -> AsyncGenerator[StreamChunk]:
        """Stream a checked request's run (check_session): start, tokens and steps, then one done or error chunk.

        The run streams in a task of its own, and this generator only relays its chunks. A server that drops
        a stream on disconnect leaves this generator to be closed by the garbage collector, which would also
        close every generator nested inside it, each in a task of its own and in no set order, and the
        session lock among them would be closed twice at once. Here, closing cancels the task, and the run
        unwinds in order inside it.
        """
        fresh = request.session_id is None
        if fresh:
            request = _in_new_session(request)
        queue: asyncio.Queue[StreamChunk | None] = asyncio.Queue()
        left = asyncio.Event()

        async def relay() -> None:
            try:
                async with contextlib.aclosing(self._chunks_of(request, user, fresh=fresh)) as chunks:
                    async for chunk in chunks:
                        if left.is_set():  # the cancellation was lost (see below): stop here, in order
                            break
                        queue.put_nowait(chunk)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(relay(), name=f"stream-{request.session_id}")
        ended = False
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
            ended = True
        finally:
            if ended:  # the run is over and its task is ending on its own
                await task
            else:
                # On Python 3.11 a cancellation can be lost: asyncio.wait_for, around each of redis-py's writes,
                # drops one that arrives as the write completes. The run then goes on, and stops at its next chunk.
                left.set()
                task.cancel()
                self._unwind(task)

    def _unwind(self, task: asyncio.Task[None]) -> None:
        """Let a cancelled run unwind in its own task, and keep it until it has (shutdown waits for it).

        Not awaited here: Starlette cancels a closing stream's task again on every turn of the event loop (an
        anyio cancel scope), and a task awaiting the run would pass each of those on to the run's cleanup, cutting
        the rollback or the lock's release short, and spinning the loop until the cleanup was done.
        """
        self._unwinding.add(task)
        task.add_done_callback(self._unwinding.discard)

    async def unwound(self) -> None:
        """Wait until every cancelled run has finished unwinding (before the app closes Redis and the database)."""
        await asyncio.gather(*self._unwinding, return_exceptions=True)
        await self.conversations.sessions.given_back()

    async def _chunks_of(self, request: QueryRequest, user: User, *, fresh: bool) -> AsyncGenerator[StreamChunk]:
        session_id = cast(str, request.session_id)
        try:
            async with contextlib.aclosing(self._run_events(request, user, fresh=fresh)) as events:
                async for chunk in events:
                    yield chunk
        except AgentRunError as exc:
            yield StreamChunk(type="error", content=exc.detail, session_id=session_id, metadata={"code": exc.code})
        except Exception:
            logger.exception("agent stream failed")
            yield StreamChunk(
                type="error",
                content="The agent failed unexpectedly.",
                session_id=session_id,
                metadata={"code": "internal_error"},
            )

    async def get_session_info(self, session_id: str, user: User) -> SessionInfo:
        """The user's session with its messages, or SessionNotFoundError (also for another user's)."""
        record = await self._owned(session_id, user)
        messages = await self.conversations.messages(session_id)
        chat = [
            ChatMessage(role="user" if isinstance(m, HumanMessage) else "assistant", content=m.text) for m in messages
        ]
        return SessionInfo(**_summary(record).model_dump(), messages=chat)

    async def list_sessions(self, user: User) -> list[SessionSummary]:
        """The user's sessions, the most recently active first."""
        return [_summary(record) for record in await self.conversations.list(user.username)]

    async def clear_session(self, session_id: str, user: User) -> None:
        """Delete the user's session and its checkpoints, or SessionNotFoundError."""
        await self._owned(session_id, user)
        await self.conversations.delete(session_id)

    async def _check_owner(self, session_id: str, user: User) -> None:
        record = await self.conversations.sessions.get(session_id)
        if record is not None and record.owner != user.username:
            raise SessionNotFoundError(session_id)

    async def _owned(self, session_id: str, user: User) -> SessionRecord:
        record = await self.conversations.record(session_id)
        # TODO 13: answer 404 for another user's session
        if record is None:
            raise SessionNotFoundError(session_id)
        return record

    async def _answer(self, request: QueryRequest, user: User, *, fresh: bool = False) -> QueryResponse:
        """A run's answer (not from the cache)."""
        done: StreamChunk | None = None
        async with contextlib.aclosing(self._run_events(request, user, tokens=False, fresh=fresh)) as events:
            async for chunk in events:
                done = chunk
        if done is None or done.type != "done":
            raise AgentRunError("The agent ended without an answer")
        metadata = {k: v for k, v in done.metadata.items() if k not in {"execution_time", "tokens_used"}}
        return QueryResponse(
            response=done.content,
            session_id=done.session_id,
            execution_time=done.metadata["execution_time"],
            tokens_used=done.metadata["tokens_used"],
            metadata={**metadata, "cached": False},
        )

    async def _replay(
        self, request: QueryRequest, user: User, cached: dict[str, Any], *, recorded: bool
    ) -> QueryResponse:
        """Serve a cached answer without running the agent; the turn goes into the session now unless the
        cache read has `recorded` it already."""
        started = time.perf_counter()
        session_id = cast(str, request.session_id)
        metadata = {**cached.get("metadata", {}), "cached": True}
        answer = QueryResponse.model_validate({**cached, "session_id": session_id, "metadata": metadata})
        if not recorded:
            question = HumanMessage(content=request.query, id=secrets.token_hex(16))
            await self.conversations.add_turn(session_id, user.username, [question, AIMessage(content=answer.response)])
        answer.execution_time = round(time.perf_counter() - started, 4)
        return answer

    async def _run_events(
        self, request: QueryRequest, user: User, *, tokens: bool = True, fresh: bool = False
    ) -> AsyncGenerator[StreamChunk]:
        """The run's chunks; `fresh`: its session was made for this request, and no one can know its id yet."""
        session_id = cast(str, request.session_id)  # prepared: check_session, or a new session's id
        run = Run(session_id=session_id, tokens=tokens)
        question = HumanMessage(content=request.query, id=secrets.token_hex(16))
        meta = {"provider": self.provider, "model": self.model_name}
        outcome = "error"
        self.active_runs += 1
        try:
            async with self.conversations.lock(session_id):
                if not fresh:  # again under the lock: the session may have been taken meanwhile
                    await self._check_owner(session_id, user)
                yield StreamChunk(type="start", session_id=session_id, metadata=meta)
                try:
                    async with contextlib.aclosing(self.runner.events(question, request.max_iterations, run)) as events:
                        async for chunk in events:
                            yield chunk
                except AgentTimeoutError:
                    outcome = "timeout"
                    await asyncio.shield(self.conversations.rollback(session_id, question))
                    raise
                except BaseException:
                    await asyncio.shield(self.conversations.rollback(session_id, question))
                    raise
                # The turn is whole in the checkpoint: its row must say so even if the client leaves right now.
                await to_completion(self.conversations.record_turn(session_id, user.username))
                outcome = "success"
        finally:
            self.active_runs -= 1
            self.metrics.track_agent_run(outcome, time.perf_counter() - run.started)
        yield StreamChunk(
            type="done",
            content="".join(run.pieces),
            session_id=session_id,
            metadata={
                **meta,
                "execution_time": round(time.perf_counter() - run.started, 4),
                "tokens_used": run.tokens_used,
                "agents": list(dict.fromkeys(step for step in run.steps if step != "tools")),
                "tools_used": list(dict.fromkeys(run.tools_used)),
                "steps": len(run.steps),
                "stop_reason": run.stop_reason,
            },
        )


def _in_new_session(request: QueryRequest) -> QueryRequest:
    return request.model_copy(update={"session_id": new_session_id()})


def new_session_id() -> str:
    """A fresh session id: 128 random bits in hex, as unguessable as a uuid4 and cheaper to make."""
    return secrets.token_hex(16)


def _summary(record: SessionRecord) -> SessionSummary:
    return SessionSummary(
        session_id=record.session_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        message_count=record.message_count,
    )
