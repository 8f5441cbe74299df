"""Checks hidden until a day: named by id or topic, counted but not shown, and marked so in every report."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import pytest

from grader import batch, gradescope_bundle, handout, reporters, visibility
from grader.core import CheckResult, Report, select
from tests.support.stage import ROOT

CHECKS = {check.id: check for check in select("medium")}


def _report() -> Report:
    results = [
        CheckResult(CHECKS["api.root"], "passed", 1.0),
        CheckResult(CHECKS["api.health"], "failed", 0.0, "200", "500"),
        CheckResult(CHECKS["errors.timeout"], "failed", 0.0, "504", "200"),
    ]
    results[0].hint = ""
    results[2].hint = "TODO 9: app/agent_service.py: _graph_events"
    results[2].hidden = True
    report = Report("stage", "medium", results)
    report.hidden_until = "2999-01-01"
    return report


def test_a_topic_names_all_its_checks_and_a_wrong_name_or_day_is_refused() -> None:
    """`errors` hides every errors.* check; a name that is no check or topic, or a day that is not one, is an error."""
    shown = visibility.parse("medium", "errors,api.root", "2026-12-20")
    assert shown.hidden == {cid for cid in CHECKS if cid.startswith("errors.")} | {"api.root"}
    assert shown.until == dt.date(2026, 12, 20)
    with pytest.raises(ValueError, match="no check or topic"):
        visibility.parse("medium", "caching")  # an advanced-only topic
    with pytest.raises(ValueError, match="is not a day"):
        visibility.parse("medium", "errors", "next friday")


def test_a_hidden_check_is_hidden_until_its_day_and_without_a_day_until_the_due_date() -> None:
    """Before the day: hidden; on it: shown; with no day: hidden, to be shown after the due date."""
    dated = visibility.Visibility(frozenset({"api.root"}), dt.date(2026, 12, 20))
    assert dated.is_hidden("api.root", dt.date(2026, 12, 19))
    assert not dated.is_hidden("api.root", dt.date(2026, 12, 20))
    assert not dated.is_hidden("api.health", dt.date(2026, 12, 19))
    assert visibility.Visibility(frozenset({"api.root"})).is_hidden("api.root")
    assert visibility.Visibility().shown == "the due date"


def test_the_text_report_shows_a_hidden_check_s_line_but_not_its_points_feedback_or_todo() -> None:
    """The score and the last line count only what is shown; the hidden check's feedback never appears."""
    report = _report()
    text = reporters.text(report)
    assert "errors.timeout: shown after 2999-01-01" in text
    assert "TODO 9" not in text and "504" not in text
    assert "Score: 1/2, and 1 hidden check(s), shown after 2999-01-01" in text
    assert reporters.next_step(report).startswith("1/2: 1 check to go")
    assert "errors.timeout" not in reporters.markdown(report).split("🔒")[0].split("\n", 1)[1]


def test_json_junit_and_gradescope_mark_the_hidden_check() -> None:
    """Each machine-readable report carries the check's visibility; the JSON round-trips through grade_all."""
    report = _report()
    document = json.loads(reporters.to_json(report))
    assert [c["visibility"] for c in document["checks"]] == ["visible", "visible", "after_due_date"]
    assert document["hidden_until"] == "2999-01-01"
    rebuilt = batch.report_from_json(document)
    assert [r.hidden for r in rebuilt.results] == [False, False, True] and rebuilt.hidden_until == "2999-01-01"
    cases = ET.fromstring(reporters.junit(report).split("?>", 1)[1]).iter("testcase")  # noqa: S314 - our own XML
    marked = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")} for c in cases}
    assert marked["errors.timeout"] == {"visibility": "after_due_date", "hidden_until": "2999-01-01"}
    assert marked["api.root"] == {}
    tests = json.loads(reporters.gradescope(report))["tests"]
    assert [t["visibility"] for t in tests] == ["visible", "visible", "after_due_date"]


def test_the_gradescope_bundle_and_the_handout_carry_the_hidden_checks(tmp_path: object) -> None:
    """run_autograder exports GRADER_HIDDEN; the handout's CHECKS.md counts the hidden checks but lists none."""
    assert "export GRADER_HIDDEN=${GRADER_HIDDEN:-errors}" in gradescope_bundle.run_autograder("medium", "errors")
    assert "GRADER_HIDDEN" not in gradescope_bundle.run_autograder("medium")
    sheet = handout.checks_sheet("medium", visibility.parse("medium", "errors").hidden)
    assert "errors." not in sheet
    hidden = [check for cid, check in CHECKS.items() if cid.startswith("errors.")]
    assert f"And {len(hidden)} more checks ({sum(c.points for c in hidden)} points)" in sheet


@pytest.mark.timeout(180)
def test_the_grader_hides_what_it_is_told_to(tmp_path: object) -> None:
    """A real grade with --hidden: the check runs and counts, and its JSON entry says after_due_date."""
    command = [sys.executable, "-m", "grader", "solutions/medium", "--only", "api.root,api.health"]
    command += ["--hidden", "api.health", "--hidden-until", "2999-01-01", "--format", "json"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    shown = {c["id"]: (c["status"], c["visibility"]) for c in document["checks"]}
    assert shown == {"api.root": ("passed", "visible"), "api.health": ("passed", "after_due_date")}
    assert document["score"] == document["max_score"]
