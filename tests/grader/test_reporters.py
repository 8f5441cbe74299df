"""The report writers, from one made-up Report: text, JSON, JUnit XML, Gradescope and Markdown."""

import json
import re
from xml.etree import ElementTree as ET

import pytest

from grader import reporters
from grader.context import Context
from grader.core import Check, CheckResult, Report


async def _noop(ctx: Context) -> None:
    return None


def _result(name: str, status: str, points: float, **details: str) -> CheckResult:
    check = Check(f"api.{name}", f"The {name} statement.", 2, _noop)
    hint = f"app/main.py: {name}" if status == "failed" else ""
    return CheckResult(check, status, points, hint=hint, **details)  # type: ignore[arg-type]


@pytest.fixture
def report() -> Report:
    results = [
        _result("fine", "passed", 2.0),
        _result("broken", "failed", 0.0, expected="HTTP 200", observed="HTTP 500", cause="a crash"),
        _result("banded", "failed", 1.0, expected="p95 within 1 s", observed="p95 1.5 s"),
        _result("later", "skipped", 0.0, reason="needs api.broken to pass first"),
    ]
    return Report("stages/x", "medium", results, duration=3.2)


def test_scores_and_exit_codes(report: Report) -> None:
    assert (report.score, report.max_score, report.exit_code) == (3.0, 8, 1)
    assert Report("x", "medium", [], error="no such folder").exit_code == 2


def test_text_shows_a_table_with_expected_observed_and_hint(report: Report) -> None:
    text = reporters.text(report)
    assert "3/8 points; 1 passed, 2 failed, 1 skipped" in text
    assert re.search(r"^  :\)\s+2/2  api\.fine: The fine statement\.$", text, re.M)
    for line in ("expected: HTTP 200", "observed: HTTP 500", "likely cause: a crash", "look at: app/main.py: broken"):
        assert line in text
    assert "skipped: needs api.broken to pass first" in text


def test_text_of_an_ungradable_stage_shows_the_log() -> None:
    text = reporters.text(Report("x", "medium", [], error="the stage did not start", log_tail="ImportError: boom"))
    assert "Could not grade x: the stage did not start" in text and "ImportError: boom" in text


def test_json_lists_each_check_with_its_status_and_feedback(report: Report) -> None:
    document = json.loads(reporters.to_json(report))
    assert (document["score"], document["max_score"], document["lab"]) == (3.0, 8, "medium")
    broken = document["checks"][1]
    assert {key: broken[key] for key in ("id", "title", "points", "max_points", "status")} == {
        "id": "api.broken",
        "title": "The broken statement.",
        "points": 0.0,
        "max_points": 2,
        "status": "failed",
    }
    assert "expected: HTTP 200" in broken["feedback"]
    assert [check["status"] for check in document["checks"]] == ["passed", "failed", "failed", "skipped"]


def test_junit_counts_failures_and_skips(report: Report) -> None:
    suite = ET.fromstring(reporters.junit(report)).find("testsuite")  # noqa: S314 - XML the grader wrote
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (
        "4",
        "2",
        "1",
        "0",
    )
    cases = suite.findall("testcase")
    assert cases[1].find("failure") is not None and cases[3].find("skipped") is not None
    assert "observed: HTTP 500" in (cases[1].findtext("failure") or "")


def test_gradescope_results_have_the_fields_gradescope_reads(report: Report) -> None:
    document = json.loads(reporters.gradescope(report))
    assert document["score"] == 3.0
    tests = document["tests"]
    assert [set(test) for test in tests] == [{"name", "score", "max_score", "status", "output", "visibility"}] * 4
    assert [(t["score"], t["max_score"], t["status"]) for t in tests] == [
        (2.0, 2, "passed"),
        (0.0, 2, "failed"),
        (1.0, 2, "failed"),
        (0.0, 2, "failed"),
    ]


def test_gradescope_of_an_ungradable_stage_scores_zero_and_says_why() -> None:
    document = json.loads(reporters.gradescope(Report("x", "medium", [], error="no app/main.py")))
    assert document["score"] == 0 and document["tests"] == [] and "no app/main.py" in document["output"]


def test_markdown_summary_has_a_row_per_check_and_details_for_failures(report: Report) -> None:
    markdown = reporters.markdown(report)
    assert markdown.startswith("### Grader: 3/8 for `stages/x` (medium lab)")
    assert markdown.count("\n| ") == 6  # header, separator, four checks
    assert markdown.count("<details>") == 3


def test_every_writer_marks_a_check_whose_two_tries_disagreed_as_flaky(report: Report) -> None:
    """A flaky check (retried, the tries disagreeing) is marked in the text, JSON, JUnit and Gradescope reports,
    with what its first try found; the other checks carry no mark."""
    flaky = report.results[0]
    flaky.flaky, flaky.first_try = True, "failed, 0/2: p95 1.9 s"
    assert "api.fine: The fine statement. (flaky)" in reporters.text(report)
    assert "flaky: the first try found otherwise (failed, 0/2: p95 1.9 s)" in reporters.text(report)
    assert reporters.text(report).count("(flaky)") == 1
    checks = json.loads(reporters.to_json(report))["checks"]
    assert [check["flaky"] for check in checks] == [True, False, False, False]
    assert checks[0]["first_try"] == "failed, 0/2: p95 1.9 s"
    written = ET.fromstring(reporters.junit(report))  # noqa: S314 - XML the grader wrote
    case = written.find("testsuite/testcase[@name='api.fine']")
    assert case is not None and case.find("flakyFailure") is not None and case.find("failure") is None
    tests = json.loads(reporters.gradescope(report))["tests"]
    assert tests[0]["extra_data"] == {"flaky": True} and "flaky" in tests[0]["output"]
    assert "extra_data" not in tests[1] and "flaky" not in tests[1]["output"]
    assert reporters.progress_line(flaky).endswith("(flaky)")
