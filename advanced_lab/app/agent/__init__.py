"""The course's agent: a LangGraph multi-agent workflow and the chat models it runs on.

This package is the same file for file in every lab tree; a test keeps the copies identical.
"""

from .graph import AgentState, build_agent_graph
from .llm import ChatModelOptions, TokenUsage, create_chat_model, model_name
from .offline import OfflineChatModel
from .tools import default_tools

__all__ = [
    "AgentState",
    "ChatModelOptions",
    "OfflineChatModel",
    "TokenUsage",
    "build_agent_graph",
    "create_chat_model",
    "default_tools",
    "model_name",
]
