"""What the offline chat model says: deterministic replies for the supervisor, researcher and writer."""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage

from .tools import CalculatorError, evaluate, find_topic

NOTES_HEADING = "Research notes:"
_NUMBER = r"\d+(?:\.\d+)?"
_OPERAND = rf"\(*\s*-?\s*{_NUMBER}\s*\)*"
_EXPRESSION = re.compile(rf"{_OPERAND}(?:\s*(?:\*\*|//|[-+*/%^×÷])\s*{_OPERAND})+")
_TIME_WORDS = re.compile(r"\b(time|date|today|clock)\b", re.IGNORECASE)
_GREETING = re.compile(r"^\s*(hi|hello|hey|good (morning|afternoon|evening))\b", re.IGNORECASE)
_NAME_GIVEN = re.compile(r"\bmy name is ([A-Za-z][\w-]{0,40})", re.IGNORECASE)
_NAME_ASKED = re.compile(r"\b(what('s| is) my name|who am i)\b", re.IGNORECASE)
_NOTE_LINE = re.compile(r"^- (\w+)\((.*)\): (.*)$")


@dataclass(frozen=True)
class PlannedToolCall:
    """A tool call the offline model decided to make."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """The offline model's answer: text, tool calls, or both."""

    text: str = ""
    tool_calls: tuple[PlannedToolCall, ...] = field(default_factory=tuple)


def plan_reply(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None, tool_choice: Any = None
) -> Reply:
    """Decide the reply from the messages and the tools bound to the call (the role follows from them)."""
    offered = [tool["function"]["name"] for tool in tools or ()]
    forced = _forced_tool(tool_choice, offered)
    question = _last_human_text(messages)
    if forced == "route":
        target = "researcher" if needs_research(question) else "writer"
        return Reply(tool_calls=(PlannedToolCall("route", {"next": target}),))
    if forced is not None:
        return Reply(tool_calls=(PlannedToolCall(forced, {}),))
    if offered:
        return _research(messages, question, offered)
    return Reply(text=_write(messages, question))


def find_expressions(text: str) -> list[str]:
    """Arithmetic expressions written in a piece of text, each one that evaluates."""
    found = []
    for match in _EXPRESSION.finditer(text):
        expression = _balance(match.group().strip())
        try:
            evaluate(expression)
        except CalculatorError:
            continue
        found.append(expression)
    return found


def needs_research(question: str) -> bool:
    """Whether a question calls for a tool: arithmetic, a course topic or the time."""
    return bool(find_expressions(question) or find_topic(question) or _TIME_WORDS.search(question))


def _forced_tool(tool_choice: Any, offered: list[str]) -> str | None:
    if isinstance(tool_choice, dict):
        name = tool_choice.get("function", {}).get("name")
        return str(name) if name else None
    if tool_choice in ("any", "required") and offered:
        return offered[0]
    if isinstance(tool_choice, str) and tool_choice in offered:
        return tool_choice
    return None


def _last_human_text(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return message.text
    return ""


def _balance(expression: str) -> str:
    while expression.count("(") > expression.count(")") and expression.startswith("("):
        expression = expression[1:].lstrip()
    while expression.count(")") > expression.count("(") and expression.endswith(")"):
        expression = expression[:-1].rstrip()
    return expression


def _results_since_question(messages: Sequence[BaseMessage]) -> list[ToolMessage]:
    results: list[ToolMessage] = []
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, ToolMessage):
            results.append(message)
    return results[::-1]


def _research(messages: Sequence[BaseMessage], question: str, offered: list[str]) -> Reply:
    results = _results_since_question(messages)
    if results:
        used = ", ".join(sorted({result.name or "a tool" for result in results}))
        return Reply(text=f"I gathered {len(results)} result(s) with {used}.")
    calls = [PlannedToolCall("calculator", {"expression": e}) for e in find_expressions(question)]
    topic = find_topic(question)
    if topic:
        calls.append(PlannedToolCall("search_course_notes", {"topic": topic}))
    if _TIME_WORDS.search(question):
        calls.append(PlannedToolCall("current_time", {}))
    calls = [call for call in calls if call.name in offered]
    if not calls:
        return Reply(text="No research needed for this question.")
    return Reply(tool_calls=tuple(calls))


def _notes(messages: Sequence[BaseMessage]) -> list[tuple[str, str, str]]:
    for message in messages:
        if isinstance(message, SystemMessage) and NOTES_HEADING in message.text:
            section = message.text.rsplit(NOTES_HEADING, 1)[1]
            matches = (_NOTE_LINE.match(line) for line in section.strip().splitlines())
            return [(m.group(1), m.group(2), m.group(3)) for m in matches if m]
    return []


def _write(messages: Sequence[BaseMessage], question: str) -> str:
    notes = _notes(messages)
    if notes:
        return " ".join(_sentence_for(tool, args, result) for tool, args, result in notes)
    return _converse(messages, question)


def _sentence_for(tool: str, args: str, result: str) -> str:
    if tool == "calculator":
        if result.startswith("error:"):
            return f"I could not compute {args}: {result.removeprefix('error:').strip()}."
        return f"{args} = {result}."
    if tool == "step_limit":
        return "I ran out of steps before I could research this; ask again with a higher max_iterations."
    if tool == "current_time":
        return f"The current time is {result} (UTC)."
    return result


def _converse(messages: Sequence[BaseMessage], question: str) -> str:
    if match := _NAME_GIVEN.search(question):
        return f"Nice to meet you, {match.group(1)}. I will remember your name for the rest of this session."
    if _NAME_ASKED.search(question):
        earlier = [m.text for m in messages if isinstance(m, HumanMessage)][:-1]
        names = [match.group(1) for text in earlier if (match := _NAME_GIVEN.search(text))]
        if names:
            return f"Your name is {names[-1]}."
        return "You have not told me your name in this session yet."
    if _GREETING.search(question):
        return (
            "Hello! I am the course agent. Ask me to calculate something such as 12 * 7, or ask about "
            "caching, rate limiting, JWT, SSE, Prometheus or LangGraph."
        )
    return (
        "I have no tool for that question. I can calculate arithmetic such as 12 * 7 and explain caching, "
        "rate limiting, JWT, SSE, Prometheus and LangGraph."
    )
