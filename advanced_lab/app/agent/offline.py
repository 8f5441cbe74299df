"""The offline chat model: a real LangChain chat model that answers, streams and calls tools with no network."""

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import Field

from .offline_replies import Reply, plan_reply

_PIECES = re.compile(r"\s*\S+\s*")


def split_tokens(text: str) -> list[str]:
    """Split text into word pieces that keep their whitespace, so joining them gives the text back."""
    return _PIECES.findall(text) or ([text] if text else [])


class OfflineChatModel(BaseChatModel):
    """A deterministic chat model for running the agent with no API key.

    It plays the supervisor, the researcher and the writer from the same rules (see `offline_replies`),
    waits like a real model (`first_token_delay_ms` before the first token, `token_delay_ms` per token,
    streamed or not), reports `usage_metadata` and emits real tool calls through `bind_tools`.
    """

    model_name: str = "offline-agent-1"
    first_token_delay_ms: float = Field(default=0.0, ge=0)
    token_delay_ms: float = Field(default=0.0, ge=0)

    @property
    def _llm_type(self) -> str:
        return "offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's format, as chat models with native tool calling do."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = plan_reply(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        time.sleep(self._total_delay(reply))
        return self._result(messages, reply)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reply = plan_reply(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        await asyncio.sleep(self._total_delay(reply))
        return self._result(messages, reply)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reply = plan_reply(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        for delay, chunk in self._chunks(messages, reply):
            time.sleep(delay)
            if run_manager and chunk.message.content:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reply = plan_reply(messages, kwargs.get("tools"), kwargs.get("tool_choice"))
        for delay, chunk in self._chunks(messages, reply):
            await asyncio.sleep(delay)
            if run_manager and chunk.message.content:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def _pieces(self, reply: Reply) -> list[str]:
        return split_tokens(reply.text) or ([""] if reply.tool_calls else [])

    def _total_delay(self, reply: Reply) -> float:
        count = max(len(self._pieces(reply)), 1)
        return (self.first_token_delay_ms + self.token_delay_ms * (count - 1)) / 1000

    def _usage(self, messages: Sequence[BaseMessage], reply: Reply) -> UsageMetadata:
        prompt = sum(len(message.text.split()) for message in messages) + 1
        output = len(split_tokens(reply.text)) + 8 * len(reply.tool_calls) or 1
        return UsageMetadata(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)

    def _result(self, messages: Sequence[BaseMessage], reply: Reply) -> ChatResult:
        message = AIMessage(
            content=reply.text,
            tool_calls=[
                {"name": call.name, "args": call.args, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
                for call in reply.tool_calls
            ],
            usage_metadata=self._usage(messages, reply),
            response_metadata={"model_name": self.model_name, "model_provider": "offline"},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _chunks(self, messages: Sequence[BaseMessage], reply: Reply) -> Iterator[tuple[float, ChatGenerationChunk]]:
        first, per_token = self.first_token_delay_ms / 1000, self.token_delay_ms / 1000
        for index, piece in enumerate(split_tokens(reply.text)):
            yield (first if index == 0 else per_token), ChatGenerationChunk(message=AIMessageChunk(content=piece))
        if reply.tool_calls:
            tool_call_chunks = [
                {
                    "name": call.name,
                    "args": json.dumps(call.args),
                    "id": f"call_{uuid.uuid4().hex[:12]}",
                    "index": index,
                    "type": "tool_call_chunk",
                }
                for index, call in enumerate(reply.tool_calls)
            ]
            delay = per_token if reply.text else first
            yield delay, ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=tool_call_chunks))
        last = AIMessageChunk(
            content="",
            usage_metadata=self._usage(messages, reply),
            response_metadata={"model_name": self.model_name, "model_provider": "offline", "finish_reason": "stop"},
            chunk_position="last",
        )
        yield 0.0, ChatGenerationChunk(message=last)
