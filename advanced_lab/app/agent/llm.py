"""The chat-model factory: the offline model by default, ChatOpenAI for any OpenAI-compatible server."""

from dataclasses import dataclass
from typing import Literal

from langchain_core.callbacks import UsageMetadataCallbackHandler
from langchain_core.language_models import BaseChatModel
from pydantic import SecretStr

from .offline import OfflineChatModel

Provider = Literal["offline", "openai"]


@dataclass(frozen=True)
class ChatModelOptions:
    """Everything the factory needs, taken from a lab's settings."""

    provider: Provider = "offline"
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    temperature: float = 0.0
    max_tokens: int | None = None
    request_timeout_seconds: float = 30.0
    max_retries: int = 1
    first_token_delay_ms: float = 0.0
    token_delay_ms: float = 0.0


def create_chat_model(options: ChatModelOptions) -> BaseChatModel:
    """Build the chat model the options name; nothing is contacted until the first call."""
    if options.provider == "offline":
        return OfflineChatModel(
            first_token_delay_ms=options.first_token_delay_ms, token_delay_ms=options.token_delay_ms
        )
    # Imported here so the offline path never loads the OpenAI client.
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=options.openai_model,
        api_key=options.openai_api_key or SecretStr("not-needed-for-local-servers"),
        base_url=options.openai_base_url,
        temperature=options.temperature,
        max_tokens=options.max_tokens,
        timeout=options.request_timeout_seconds,
        max_retries=options.max_retries,
        # Without it, token usage is lost when streaming from a server other than OpenAI's own.
        stream_usage=True,
    )


def model_name(model: BaseChatModel) -> str:
    """The model's name as reported in a response's metadata."""
    return str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)


class TokenUsage(UsageMetadataCallbackHandler):
    """Adds up the token usage of every model call of a run, by model.

    Inline: LangChain hands each event of a handler that is not to its thread pool (a few threads), and a run
    has many events, so concurrent runs queued behind each other's hops. Adding two numbers needs no thread.
    """

    run_inline = True

    @property
    def total_tokens(self) -> int:
        """Tokens in and out over the whole run."""
        return sum(usage["total_tokens"] for usage in self.usage_metadata.values())
