"""A regrade reads the previous gradebook as grade_all writes it, and lists each student's changes by check."""

from __future__ import annotations

import csv
from pathlib import Path

from grader import batch, regrade
from grader.core import CheckResult, Report, Status, select

CHECKS = select("medium")
IDS = [check.id for check in CHECKS]


def _row(student: str, failed: set[str] = frozenset(), skipped: set[str] = frozenset(), error: str = "") -> batch.Row:
    """A gradebook row as grade_all makes it from a report."""
    results = []
    for check in CHECKS:
        status: Status = "failed" if check.id in failed else "skipped" if check.id in skipped else "passed"
        results.append(CheckResult(check, status, 0.0 if status != "passed" else float(check.points)))
    report = Report(student, "medium", [] if error else results, error=error)
    return batch.Row(student, report, sum(c.points for c in CHECKS), 1.0)


def test_each_student_s_changes_are_listed_check_by_check(tmp_path: Path) -> None:
    """Fixed checks are now passing, broken ones now failing, a skipped one that fails is another change; a new
    student and one who is gone are listed as such; an unchanged student did not move."""
    old, new = tmp_path / "old", tmp_path / "new"
    query, stream, session = "api.query_shape", "streaming.event_order", "sessions.continuity"
    batch.write_outputs(
        [_row("ann", failed={query}, skipped={stream}), _row("ben", failed={session}), _row("cy"), _row("dee")],
        old,
        "json",
    )
    before, has_skipped = regrade.read_gradebook(old / "gradebook.csv", IDS)
    assert has_skipped and before["ann"].checks[stream] == "skipped"
    rows = [_row("ann", failed={stream}), _row("ben"), _row("cy"), _row("eve", error="the stage did not start")]
    after = {row.student: regrade.Entry(row.score, batch._statuses(row, "medium")) for row in rows}
    changes = {change.student: change for change in regrade.compare(before, after)}
    assert changes["ann"].now_passed == (query,) and changes["ann"].other == (f"{stream} (skipped -> failed)",)
    assert changes["ben"].now_passed == (session,) and changes["ben"].cells()["change"].startswith("+")
    assert not changes["cy"].moved
    assert changes["eve"].cells()["score_before"] == "new" and changes["dee"].cells()["score_after"] == "gone"
    written = regrade.write(list(changes.values()), new)
    with open(written, encoding="utf-8") as file:
        table = {row["student"]: row for row in csv.DictReader(file)}
    assert table["ann"]["now_passed"] == query and table["cy"]["change"] == "+0"
    assert "4 of 5 students changed" in regrade.summary(list(changes.values()), has_skipped)


def test_a_gradebook_without_skipped_checks_counts_them_as_passed_and_says_so(tmp_path: Path) -> None:
    """An older gradebook has no skipped_checks column: its non-failed checks are read as passed, with a note."""
    path = tmp_path / "gradebook.csv"
    path.write_text("student,score,max,status,seconds,failed_checks,reason\nann,70,77,graded,9.0,api.root,\n")
    before, has_skipped = regrade.read_gradebook(path, IDS)
    assert not has_skipped and before["ann"].checks["api.root"] == "failed"
    assert {status for cid, status in before["ann"].checks.items() if cid != "api.root"} == {"passed"}
    assert "count as passed" in regrade.summary([], has_skipped)


def test_an_ungradable_student_has_no_check_statuses() -> None:
    """Not graded means no check passed or failed: a change from it is a score change, not a list of checks."""
    assert regrade.statuses(IDS, "", "", graded=False) == {}
