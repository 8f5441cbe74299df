"""The researcher's tools."""

import pytest

from app.agent.knowledge import COURSE_NOTES
from app.agent.tools import CalculatorError, calculator, current_time, evaluate, search_course_notes


@pytest.mark.parametrize(
    ("expression", "result"),
    [("12 * 7", "84"), ("(3 + 4) / 2", "3.5"), ("2 ** 10", "1024"), ("-5 + 2", "-3"), ("7 // 2", "3"), ("2^3", "8")],
)
def test_calculator_evaluates_arithmetic(expression: str, result: str) -> None:
    """Plain arithmetic evaluates, integral results without a decimal point."""
    assert calculator.invoke({"expression": expression}) == result


@pytest.mark.parametrize("expression", ["__import__('os').system('id')", "a + 1", "1 / 0", "9 ** 9 ** 9", "1" * 300])
def test_calculator_refuses_what_is_not_safe_arithmetic(expression: str) -> None:
    """Names, calls, division by zero, huge exponents and long input are refused, never evaluated."""
    with pytest.raises(CalculatorError):
        evaluate(expression)
    assert calculator.invoke({"expression": expression}).startswith("error:")


def test_search_course_notes_finds_topics_by_alias() -> None:
    """A topic is found by its name or an alias; an unknown one lists the known topics."""
    assert search_course_notes.invoke({"topic": "Rate Limit"}) == COURSE_NOTES["rate limiting"]
    assert search_course_notes.invoke({"topic": "cache"}) == COURSE_NOTES["caching"]
    assert "Known topics" in search_course_notes.invoke({"topic": "kubernetes"})


def test_current_time_is_iso_utc() -> None:
    """The time tool answers in ISO 8601 UTC."""
    assert current_time.invoke({}).endswith("+00:00")
