"""The agent behind the API: runs the graph for a query, streams it, and manages the sessions."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
import openai
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError

from .agent import AgentState, TokenUsage, build_agent_graph, create_chat_model, default_tools, model_name
from .config import Settings
from .exceptions import AgentRunError, AgentTimeoutError, SessionNotFoundError, UpstreamError
from .models import ChatMessage, QueryRequest, QueryResponse, SessionInfo, SessionSummary, StreamChunk
from .sessions import SessionRecord, SessionStore
from .to_completion import to_completion

logger = logging.getLogger(__name__)
STEP_LIMIT_ANSWER = (
    "I reached the limit of {limit} step(s) before I could finish an answer. "
    "Ask again with a higher max_iterations (up to 20)."
)
_ANSWER_NODE = "writer"
_UPSTREAM_ERRORS: tuple[type[BaseException], ...] = (openai.APIError, httpx.HTTPError)


@dataclass
class _Run:
    """What one agent run produced, gathered while its events stream by."""

    session_id: str
    started: float = field(default_factory=time.perf_counter)
    pieces: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    tools_used: list[str] = field(default_factory=list)
    stop_reason: Literal["completed", "max_iterations"] = "completed"
    usage: TokenUsage = field(default_factory=TokenUsage)

    @property
    def tokens_used(self) -> int:
        return self.usage.total_tokens


class AgentService:
    """Owns the chat model, the compiled graph and the sessions; one instance per application."""

    def __init__(
        self, settings: Settings, model: BaseChatModel | None = None, checkpointer: InMemorySaver | None = None
    ) -> None:
        self.settings = settings
        self.model = model or create_chat_model(settings.chat_model_options())
        self.checkpointer = checkpointer or InMemorySaver()
        self.graph = build_agent_graph(self.model, default_tools(), self.checkpointer)
        self.sessions = SessionStore()
        self.active_runs = 0

    @property
    def provider(self) -> str:
        return self.settings.llm_provider

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    async def process_query(self, request: QueryRequest) -> QueryResponse:
        """Run the agent to the end and return its answer (AgentRunError subclasses on failure)."""
        done: StreamChunk | None = None
        async with contextlib.aclosing(self._run_events(request)) as events:
            async for chunk in events:
                done = chunk
        if done is None or done.type != "done":
            raise AgentRunError("The agent ended without an answer")
        return QueryResponse(
            response=done.content,
            session_id=done.session_id,
            execution_time=done.metadata["execution_time"],
            tokens_used=done.metadata["tokens_used"],
            metadata={
                key: value for key, value in done.metadata.items() if key not in {"execution_time", "tokens_used"}
            },
        )

    async def stream_query(self, request: QueryRequest) -> AsyncGenerator[StreamChunk]:
        """Stream the run as start, token and step chunks, ending with exactly one done or error chunk."""
        # TODO 4: stream the run's chunks, ending with exactly one done or error chunk
        raise NotImplementedError("TODO 4: stream the run's chunks, ending with exactly one done or error chunk")
        yield  # never reached: a yield keeps this method an async generator

    async def get_session_info(self, session_id: str) -> SessionInfo:
        """The session with its messages, or SessionNotFoundError."""
        record = self._record(session_id)
        # TODO 5: the session's messages from the checkpointer, as ChatMessages
        chat: list[ChatMessage] = []
        return SessionInfo(**_summary(record).model_dump(), messages=chat)

    def list_sessions(self) -> list[SessionSummary]:
        """Every session, the most recently active first."""
        return [_summary(record) for record in self.sessions.list()]

    async def clear_session(self, session_id: str) -> None:
        """Delete a session and its checkpoints, or SessionNotFoundError."""
        self._record(session_id)
        async with self.sessions.lock(session_id):
            await self.checkpointer.adelete_thread(session_id)
            self.sessions.delete(session_id)

    def _record(self, session_id: str) -> SessionRecord:
        record = self.sessions.get(session_id)
        if record is None:
            raise SessionNotFoundError(session_id)
        return record

    async def _conversation(self, session_id: str) -> list[BaseMessage]:
        state = await self.graph.aget_state(_thread(session_id))
        return list(state.values.get("messages", []))

    async def _record_turn(self, session_id: str) -> None:
        self.sessions.record_turn(session_id, len(await self._conversation(session_id)))

    async def _run_events(self, request: QueryRequest) -> AsyncGenerator[StreamChunk]:
        session_id = request.session_id or new_session_id()
        run = _Run(session_id=session_id)
        question = HumanMessage(content=request.query, id=uuid.uuid4().hex)
        meta = {"provider": self.provider, "model": self.model_name}
        lock = self.sessions.lock(session_id)
        self.active_runs += 1
        try:
            async with lock:
                yield StreamChunk(type="start", session_id=session_id, metadata=meta)
                try:
                    async with contextlib.aclosing(self._graph_events(question, request.max_iterations, run)) as events:
                        async for chunk in events:
                            yield chunk
                except BaseException:
                    await asyncio.shield(self._rollback(session_id, question))
                    raise
                # The turn is whole now: count it even if the client leaves meanwhile.
                await to_completion(self._record_turn(session_id))
        finally:
            self.active_runs -= 1
            self.sessions.forget_lock_if_unused(session_id)
        content = "".join(run.pieces)
        yield StreamChunk(
            type="done",
            content=content,
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

    async def _graph_events(
        self, question: HumanMessage, max_iterations: int, run: _Run
    ) -> AsyncGenerator[StreamChunk]:
        """Run the graph in its own task, so the deadline and a disconnect cancel the run itself."""
        queue: asyncio.Queue[StreamChunk | BaseException | None] = asyncio.Queue()
        config: RunnableConfig = {
            **_thread(run.session_id),
            "callbacks": [run.usage],  # sees every model call, and adds up its tokens (run.tokens_used)
            # TODO 3: bound the run's steps by max_iterations
        }

        async def produce() -> None:
            try:
                # TODO 12: give the run a deadline of AGENT_TIMEOUT_SECONDS
                async with contextlib.nullcontext():
                    with contextlib.suppress(GraphRecursionError):  # a safety net: the graph stops itself first
                        turn = cast("AgentState", {"messages": [question]})
                        # One checkpoint write at the end of the turn, not one per step: a failed turn is rolled
                        # back anyway, and per-step writes serialise concurrent runs on the database.
                        stream = self.graph.astream(
                            turn, config, stream_mode=["messages", "updates"], durability="exit"
                        )
                        async for mode, payload in stream:
                            for chunk in self._chunks(mode, payload, run):
                                queue.put_nowait(chunk)
                    if not run.pieces:
                        queue.put_nowait(await self._answer_step_limit(run, max_iterations))
            except Exception as exc:  # noqa: BLE001 - handed to the consumer, which translates it
                queue.put_nowait(exc)
            else:
                queue.put_nowait(None)

        producer = asyncio.create_task(produce(), name=f"agent-run-{run.session_id}")
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise self._translate(item) from item
                yield item
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer

    async def _answer_step_limit(self, run: _Run, max_iterations: int) -> StreamChunk:
        """The graph ended without an answer: the step budget ran out. Answer so, and keep the turn whole."""
        run.stop_reason = "max_iterations"
        answer = STEP_LIMIT_ANSWER.format(limit=max_iterations)
        run.pieces.append(answer)
        await self.graph.aupdate_state(_thread(run.session_id), {"messages": [AIMessage(content=answer)]})
        return StreamChunk(type="token", content=answer, session_id=run.session_id)

    def _chunks(self, mode: str, payload: Any, run: _Run) -> list[StreamChunk]:
        # TODO 2: turn the writer's streamed messages into token chunks
        if mode == "messages":
            return []
        chunks = []
        for node, update in payload.items():
            if node.startswith("__"):
                continue
            run.steps.append(node)
            if (update or {}).get("budget_exhausted"):
                run.stop_reason = "max_iterations"
            for message in (update or {}).get("research", []):
                if isinstance(message, ToolMessage) and message.name:
                    run.tools_used.append(message.name)
            chunks.append(StreamChunk(type="step", content=node, session_id=run.session_id))
        return chunks

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError):
            return AgentTimeoutError(f"The agent did not answer within {self.settings.agent_timeout_seconds:g} s")
        # A provider's malformed reply surfaces as a ValueError (JSON or schema); the offline model has none.
        if isinstance(exc, _UPSTREAM_ERRORS) or (self.provider == "openai" and isinstance(exc, ValueError)):
            logger.warning("LLM provider failed: %s: %s", type(exc).__name__, exc)
            return UpstreamError(f"The LLM provider failed ({type(exc).__name__})")
        return exc

    async def _rollback(self, session_id: str, question: HumanMessage) -> None:
        """Remove a failed turn from the conversation, so the session holds only whole turns.

        The messages are the checkpoint's own, not the state's: a run cancelled just after its writer answered
        leaves that answer as a pending write of the checkpoint. The state shows it, but removing it would fail
        (the update applies to the checkpoint), and the update's new checkpoint leaves it behind anyway.
        """
        saved = await self.checkpointer.aget_tuple(_thread(session_id))
        messages = saved.checkpoint["channel_values"].get("messages", []) if saved else []
        ids = [m.id for m in messages if m.id]
        if question.id not in ids:
            return
        stale = ids[ids.index(question.id) :]
        await self.graph.aupdate_state(
            _thread(session_id), {"messages": [RemoveMessage(id=message_id) for message_id in stale]}
        )


def new_session_id() -> str:
    """A fresh session id."""
    return uuid.uuid4().hex


def _thread(session_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": session_id}}


def _summary(record: SessionRecord) -> SessionSummary:
    return SessionSummary(
        session_id=record.session_id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        message_count=record.message_count,
    )
