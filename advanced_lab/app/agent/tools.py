"""The researcher's tools: a safe calculator, the course-notes lookup and the current time."""

import ast
import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime

from langchain_core.tools import BaseTool, tool

from .knowledge import COURSE_NOTES, TOPIC_ALIASES

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_EXPRESSION = 200
_MAX_EXPONENT = 100  # keeps 9 ** 9 ** 9 from pinning a core


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or cannot be evaluated."""


def evaluate(expression: str) -> float:
    """Evaluate plain arithmetic (numbers, + - * / // % **, parentheses) without eval()."""
    if len(expression) > _MAX_EXPRESSION:
        raise CalculatorError(f"expression longer than {_MAX_EXPRESSION} characters")
    cleaned = expression.replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(cleaned, mode="eval")
    except SyntaxError as exc:
        raise CalculatorError(f"not an arithmetic expression: {expression!r}") from exc
    return _evaluate_node(tree.body)


def _evaluate_node(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate_node(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_EXPONENT:
            raise CalculatorError(f"exponent larger than {_MAX_EXPONENT}")
        try:
            return _BINARY[type(node.op)](left, right)
        except ZeroDivisionError as exc:
            raise CalculatorError("division by zero") from exc
    raise CalculatorError("only numbers, + - * / // % ** and parentheses are allowed")


def format_number(value: float) -> str:
    """Show integral results without a trailing .0 and others with at most 10 significant digits."""
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    return f"{value:.10g}"


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '12 * 7' or '(3 + 4) / 2' and return the result."""
    try:
        return format_number(evaluate(expression))
    except CalculatorError as exc:
        return f"error: {exc}"


def find_topic(text: str) -> str | None:
    """Return the course topic that a piece of text names, if any."""
    lowered = text.lower()
    for alias, topic in TOPIC_ALIASES.items():
        if re.search(rf"\b{re.escape(alias)}\b", lowered):
            return topic
    return None


@tool
def search_course_notes(topic: str) -> str:
    """Look up the course notes on a topic: caching, rate limiting, jwt, sse, prometheus or langgraph."""
    key = find_topic(topic) or topic.strip().lower()
    if key in COURSE_NOTES:
        return COURSE_NOTES[key]
    return f"No course notes on {topic!r}. Known topics: {', '.join(COURSE_NOTES)}."


@tool
def current_time() -> str:
    """Return the current date and time in UTC (ISO 8601)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_tools() -> list[BaseTool]:
    """The researcher's standard tool set."""
    return [calculator, search_course_notes, current_time]
