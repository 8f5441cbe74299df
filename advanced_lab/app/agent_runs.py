"""One agent turn: the graph runs in a task of its own, and its stream becomes StreamChunks."""

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import httpx
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.errors import GraphRecursionError
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StreamMode
from opentelemetry import trace

from .agent import AgentState, TokenUsage
from .exceptions import AgentTimeoutError, UpstreamError
from .logging_config import get_logger
from .models import StreamChunk
from .tracing import NodeSpanHandler

logger = get_logger(__name__)
STEP_LIMIT_ANSWER = (
    "I reached the limit of {limit} step(s) before I could finish an answer. "
    "Ask again with a higher max_iterations (up to 20)."
)
ANSWER_NODE = "writer"


def _upstream_errors(provider: str) -> tuple[type[BaseException], ...]:
    """What a provider's failure raises. The OpenAI client is imported with that provider only: loading it (and
    its hundreds of pydantic models) was a sixth of the service's start-up, for errors the offline model never raises.
    """
    if provider != "openai":
        return (httpx.HTTPError,)
    import openai

    return (openai.APIError, httpx.HTTPError)


def thread(session_id: str) -> RunnableConfig:
    """The graph config that addresses one conversation's checkpoints."""
    return {"configurable": {"thread_id": session_id}}


@dataclass
class Run:
    """What one agent run produced, gathered while its events stream by."""

    session_id: str
    started: float = field(default_factory=time.perf_counter)
    pieces: list[str] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    tools_used: list[str] = field(default_factory=list)
    stop_reason: Literal["completed", "max_iterations"] = "completed"
    usage: TokenUsage = field(default_factory=TokenUsage)
    # False for a JSON answer: the answer comes whole from the writer's update, and the model is not asked to
    # stream, which spares a callback and a chunk per token.
    tokens: bool = True

    @property
    def tokens_used(self) -> int:
        return self.usage.total_tokens


class AgentRunner:
    """Runs the compiled graph for one turn under a deadline, streaming tokens and steps."""

    def __init__(
        self,
        graph: CompiledStateGraph[AgentState, Any, AgentState, AgentState],
        *,
        timeout_seconds: float,
        provider: str,
        tracer: trace.Tracer,
    ) -> None:
        self.graph = graph
        self.timeout_seconds = timeout_seconds
        self.provider = provider
        self.tracer = tracer
        self._untraced = isinstance(tracer, trace.NoOpTracer)

    async def events(self, question: HumanMessage, max_iterations: int, run: Run) -> AsyncGenerator[StreamChunk]:
        """The turn's chunks; the graph runs in its own task, so the deadline and a disconnect cancel it."""
        queue: asyncio.Queue[StreamChunk | BaseException | None] = asyncio.Queue()
        config: RunnableConfig = {
            **thread(run.session_id),
            "recursion_limit": max_iterations + 1,  # LangGraph counts the input step too
            # Node spans only when tracing is on: LangChain checks every handler on every model call and event.
            "callbacks": [run.usage] if self._untraced else [run.usage, NodeSpanHandler(self.tracer)],
        }

        async def produce() -> None:
            with self.tracer.start_as_current_span("agent.run", attributes={"session.id": run.session_id}):
                try:
                    async with asyncio.timeout(self.timeout_seconds):
                        with contextlib.suppress(GraphRecursionError):  # a safety net: the graph stops itself first
                            turn = cast("AgentState", {"messages": [question]})
                            # One checkpoint write at the end of the turn, not one per step: a failed turn is rolled
                            # back anyway, and per-step writes serialise concurrent runs on the database.
                            modes: list[StreamMode] = ["messages", "updates"] if run.tokens else ["updates"]
                            stream = self.graph.astream(turn, config, stream_mode=modes, durability="exit")
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

    async def _answer_step_limit(self, run: Run, max_iterations: int) -> StreamChunk:
        """The graph ended without an answer: the step budget ran out. Answer so, and keep the turn whole."""
        run.stop_reason = "max_iterations"
        answer = STEP_LIMIT_ANSWER.format(limit=max_iterations)
        run.pieces.append(answer)
        await self.graph.aupdate_state(thread(run.session_id), {"messages": [AIMessage(content=answer)]})
        return StreamChunk(type="token", content=answer, session_id=run.session_id)

    def _chunks(self, mode: str, payload: Any, run: Run) -> list[StreamChunk]:
        if mode == "messages":
            message, metadata = payload
            if metadata.get("langgraph_node") == ANSWER_NODE and message.text:
                run.pieces.append(message.text)
                return [StreamChunk(type="token", content=message.text, session_id=run.session_id)]
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
            if node == ANSWER_NODE and not run.tokens:
                for message in (update or {}).get("messages", []):
                    if isinstance(message, AIMessage) and message.text:
                        run.pieces.append(message.text)
                        chunks.append(StreamChunk(type="token", content=message.text, session_id=run.session_id))
        return chunks

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TimeoutError):
            return AgentTimeoutError(f"The agent did not answer within {self.timeout_seconds:g} s")
        # A provider's malformed reply surfaces as a ValueError (JSON or schema); the offline model has none.
        upstream = _upstream_errors(self.provider)
        if isinstance(exc, upstream) or (self.provider == "openai" and isinstance(exc, ValueError)):
            logger.warning("LLM provider failed", error=type(exc).__name__)
            return UpstreamError(f"The LLM provider failed ({type(exc).__name__})")
        return exc
