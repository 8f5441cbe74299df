"""Writers of one Report: the terminal table, JSON, JUnit XML, Gradescope's results.json and a Markdown summary."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from typing import Any
from xml.etree import ElementTree as ET

from .core import CheckResult, Report
from .visibility import AFTER_DUE_DATE, VISIBLE

FORMATS = ("text", "json", "junit", "gradescope")
MARKS = {"passed": ":)", "failed": ":(", "skipped": ":|"}
ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭️"}


def _points(result: CheckResult) -> str:
    return f"{result.points:g}/{result.check.points}"


def _headline(report: Report) -> str:
    counts = ", ".join(f"{report.count(status)} {status}" for status in ("passed", "failed", "skipped"))
    return (
        f"{report.stage} ({report.lab} lab): {report.score:g}/{report.max_score} points; "
        f"{counts}; graded in {report.duration:.1f} s"
    )


def _flaky(result: CheckResult) -> str:
    return " (flaky)" if result.flaky else ""


def progress_line(result: CheckResult) -> str:
    """The line printed as each check finishes."""
    return f"{MARKS[result.status]} {_points(result):>5}  {result.check.id}: {result.check.title}{_flaky(result)}"


# "TODO 5", "TODO 5 and 7", "TODOs 3, 6 and 7": the numbers a hint or a skip reason names.
_TODOS = re.compile(r"\bTODOs? (\d+(?:(?:, | and )\d+)*)")


def named_todos(text: str) -> list[int]:
    """The TODO numbers `text` names, in the order it names them."""
    return [int(number) for found in _TODOS.findall(text) for number in re.findall(r"\d+", found)]


def next_step(report: Report, order: Sequence[int] = ()) -> str:
    """The line a student reads last: the score, what is left, and the TODO to start with.

    That TODO is the first, in `order` (the lab sheet's; numeric order where it is silent), that a check not
    passed names in its hint or skip reason; without one, the first check that failed.
    """
    if report.error:
        return f"cannot grade: {report.error}"
    left = [result for result in report.shown if result.status != "passed"]
    score = _score_of(report.shown)
    if not left:
        return f"{score}: every check passed"
    named = {number for result in left for number in named_todos(f"{result.hint} {result.reason}")}
    rank = {number: place for place, number in enumerate(order)}
    todos = sorted(named, key=lambda number: (rank.get(number, len(rank)), number))
    failed = [result for result in left if result.status == "failed"] or left
    start = f"TODO {todos[0]}" if todos else f"check {failed[0].check.id}"
    return f"{score}: {len(left)} check{'s' if len(left) > 1 else ''} to go, start with {start}"


def progress(result: CheckResult) -> str:
    """What the terminal shows as each check finishes: its line, and under it its feedback if it did not pass."""
    lines = [progress_line(result)]
    for line in result.feedback.splitlines():
        lines.extend(textwrap.wrap(line, 110, initial_indent=" " * 11, subsequent_indent=" " * 15))
    return "\n".join(lines)


def text(report: Report) -> str:
    """The terminal report: a table of checks, and under each failure what was expected and observed."""
    if report.error:
        return f"Could not grade {report.stage}: {report.error}\n\nThe stage's log:\n{report.log_tail}\n"
    shown = report.shown
    lines = [f"Grade of {_headline(report) if len(shown) == len(report.results) else _hidden_headline(report)}"]
    lines += ["", "  result  points  check"]
    for result in report.results:
        if result.hidden:
            lines.append(f"  {'hidden':<6}  {'?':>6}  {result.check.id}: shown after {report.hidden_until}")
            continue
        line = f"  {MARKS[result.status]:<6}  {_points(result):>6}  {result.check.id}: {result.check.title}"
        lines.append(line + _flaky(result))
        for line in result.feedback.splitlines():
            lines.extend(textwrap.wrap(line, 110, initial_indent=" " * 18, subsequent_indent=" " * 22))
    lines += ["", f"Score: {_shown_score(report)}"]
    return "\n".join(lines) + "\n"


def _score_of(results: Sequence[CheckResult]) -> str:
    return f"{round(sum(r.points for r in results), 2):g}/{sum(r.check.points for r in results)}"


def _shown_score(report: Report) -> str:
    """The score of what a student may see; hidden checks are counted, but not shown, until their day."""
    shown = report.shown
    score = _score_of(shown)
    hidden = len(report.results) - len(shown)
    return score if not hidden else f"{score}, and {hidden} hidden check(s), shown after {report.hidden_until}"


def _hidden_headline(report: Report) -> str:
    shown = report.shown
    counts = ", ".join(f"{sum(r.status == s for r in shown)} {s}" for s in ("passed", "failed", "skipped"))
    return f"{report.stage} ({report.lab} lab): {_shown_score(report)}; {counts}; graded in {report.duration:.1f} s"


def _check_json(result: CheckResult) -> dict[str, Any]:
    return {
        "id": result.check.id,
        "title": result.check.title,
        "module": result.check.module,
        "points": result.points,
        "max_points": result.check.points,
        "status": result.status,
        "feedback": result.feedback,
        "expected": result.expected,
        "observed": result.observed,
        "hint": result.hint,
        "duration_seconds": round(result.duration, 3),
        "flaky": result.flaky,
        "first_try": result.first_try,
        "visibility": AFTER_DUE_DATE if result.hidden else VISIBLE,
    }


def to_json(report: Report) -> str:
    """Every check with id, title, points, status and feedback, and the totals."""
    document = {
        "stage": report.stage,
        "lab": report.lab,
        "score": report.score,
        "max_score": report.max_score,
        "passed": report.count("passed"),
        "failed": report.count("failed"),
        "skipped": report.count("skipped"),
        "duration_seconds": round(report.duration, 2),
        "error": report.error,
        "log_tail": report.log_tail,
        "hidden_until": report.hidden_until if any(r.hidden for r in report.results) else None,
        "checks": [_check_json(result) for result in report.results],
    }
    return json.dumps(document, indent=2) + "\n"


def junit(report: Report) -> str:
    """JUnit XML for CI: a test case per check; skipped checks are skipped, failures carry the feedback."""
    suite = ET.Element("testsuite", name=f"grader.{report.lab}", time=f"{report.duration:.3f}")
    for result in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"grader.{result.check.module}", name=result.check.id)
        case.set("time", f"{result.duration:.3f}")
        if result.status == "failed":
            ET.SubElement(case, "failure", message=result.check.title).text = result.feedback
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=result.reason)
        if result.hidden:
            properties = ET.SubElement(case, "properties")
            ET.SubElement(properties, "property", name="visibility", value=AFTER_DUE_DATE)
            ET.SubElement(properties, "property", name="hidden_until", value=report.hidden_until)
        if result.flaky:  # Maven Surefire's mark for a test whose rerun disagreed with its first run
            kind = "flakyFailure" if result.status == "passed" else "rerunFailure"
            ET.SubElement(case, kind, message=result.first_try).text = result.flaky_note
    if report.error:
        case = ET.SubElement(suite, "testcase", classname="grader", name="stage starts")
        ET.SubElement(case, "error", message=report.error).text = report.log_tail
    counts = {"tests": len(suite), "failures": report.count("failed"), "skipped": report.count("skipped")}
    suite.attrib |= {name: str(value) for name, value in counts.items()} | {"errors": str(int(bool(report.error)))}
    root = ET.Element("testsuites", name="grader")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def gradescope(report: Report) -> str:
    """Gradescope's results.json: `tests[]` (name, score, max_score, status, output, visibility) and `score`."""
    tests = [
        {
            "name": f"{result.check.id}: {result.check.title}",
            "score": result.points,
            "max_score": result.check.points,
            "status": "passed" if result.status == "passed" else "failed",
            "output": result.feedback or "passed",
            "visibility": AFTER_DUE_DATE if result.hidden else VISIBLE,
            **({"extra_data": {"flaky": True}} if result.flaky else {}),
        }
        for result in report.results
    ]
    summary = f"Could not grade: {report.error}\n\n{report.log_tail}" if report.error else _headline(report)
    document = {"score": report.score, "output": summary, "visibility": "visible", "tests": tests}
    return json.dumps(document, indent=2) + "\n"


def markdown(report: Report) -> str:
    """A summary for GitHub Actions' job page (GITHUB_STEP_SUMMARY)."""
    if report.error:
        return f"### Grader: could not grade `{report.stage}`\n\n{report.error}\n\n```\n{report.log_tail}\n```\n"
    lines = [f"### Grader: {_shown_score(report)} for `{report.stage}` ({report.lab} lab)", ""]
    lines += ["| | check | points |", "| --- | --- | --- |"]
    for result in report.results:
        if result.hidden:
            lines.append(f"| 🔒 | `{result.check.id}`: shown after {report.hidden_until} | ? |")
            continue
        title = result.check.title.replace("|", "\\|")
        lines.append(f"| {ICONS[result.status]} | `{result.check.id}`: {title} | {_points(result)} |")
    failures = [result for result in report.shown if result.status != "passed"]
    for result in failures:
        lines += ["", f"<details><summary>{result.check.id}</summary>", "", "```", result.feedback, "```", "</details>"]
    return "\n".join(lines) + "\n"


def render(report: Report, kind: str) -> str:
    writers = {"text": text, "json": to_json, "junit": junit, "gradescope": gradescope}
    return writers[kind](report)
