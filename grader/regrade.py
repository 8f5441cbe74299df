"""A regrade against the last gradebook: what changed for each student, check by check.

`grade_all --previous OLD/gradebook.csv` writes `changes.csv` (a row per student: the scores before and after,
and the checks that went from failed or skipped to passed, from passed to failed or skipped, and the rest) and
prints the students whose grade moved. A check's status in a gradebook is read from its `failed_checks` and
`skipped_checks` columns: every other check of the lab passed (a gradebook older than the `skipped_checks`
column counts a skipped check as passed, and says so). A student who is new, or gone, is listed as such.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CHANGE_COLUMNS = ("student", "score_before", "score_after", "change", "now_passed", "now_failing", "other_changes")


@dataclass(frozen=True)
class Entry:
    """One student's row of a gradebook: the score, and each check's status (empty when ungradable)."""

    score: float
    checks: dict[str, str]


def statuses(check_ids: Iterable[str], failed: str, skipped: str, graded: bool) -> dict[str, str]:
    """Each check's status from a row's `;`-joined failed and skipped ids; nothing when it was not graded."""
    if not graded:
        return {}
    failed_ids, skipped_ids = set(filter(None, failed.split(";"))), set(filter(None, skipped.split(";")))
    return {cid: "failed" if cid in failed_ids else "skipped" if cid in skipped_ids else "passed" for cid in check_ids}


def read_gradebook(path: Path, check_ids: Sequence[str]) -> tuple[dict[str, Entry], bool]:
    """Every student's entry of a gradebook.csv, and whether it had the skipped_checks column."""
    with open(path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    has_skipped = bool(rows) and "skipped_checks" in rows[0]
    entries = {
        row["student"]: Entry(
            float(row["score"] or 0),
            statuses(check_ids, row.get("failed_checks", ""), row.get("skipped_checks", ""), row["status"] == "graded"),
        )
        for row in rows
    }
    return entries, has_skipped


@dataclass(frozen=True)
class Change:
    """What changed for one student between two gradebooks."""

    student: str
    before: float | None
    after: float | None
    now_passed: tuple[str, ...]
    now_failing: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def moved(self) -> bool:
        return self.before != self.after or bool(self.now_passed or self.now_failing or self.other)

    def cells(self) -> dict[str, str]:
        delta = "" if self.before is None or self.after is None else f"{self.after - self.before:+g}"
        return {
            "student": self.student,
            "score_before": "new" if self.before is None else f"{self.before:g}",
            "score_after": "gone" if self.after is None else f"{self.after:g}",
            "change": delta,
            "now_passed": ";".join(self.now_passed),
            "now_failing": ";".join(self.now_failing),
            "other_changes": ";".join(self.other),
        }


def compare(before: Mapping[str, Entry], after: Mapping[str, Entry]) -> list[Change]:
    """A change per student in either gradebook, in the order of the new one, then those gone."""
    changes = []
    for student in [*after, *(s for s in before if s not in after)]:
        old, new = before.get(student), after.get(student)
        old_checks, new_checks = (old.checks if old else {}), (new.checks if new else {})
        passed, failing, other = [], [], []
        for cid in dict.fromkeys([*new_checks, *old_checks]):
            was, now = old_checks.get(cid, "not graded"), new_checks.get(cid, "not graded")
            if was == now or old is None or new is None:
                continue
            if now == "passed":
                passed.append(cid)
            elif was == "passed":
                failing.append(cid)
            else:
                other.append(f"{cid} ({was} -> {now})")
        changes.append(
            Change(
                student, old.score if old else None, new.score if new else None, *map(tuple, (passed, failing, other))
            )
        )
    return changes


def write(changes: Sequence[Change], out: Path) -> Path:
    """changes.csv in `out`, a row per student."""
    target = out / "changes.csv"
    out.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=CHANGE_COLUMNS)
        writer.writeheader()
        writer.writerows(change.cells() for change in changes)
    return target


def summary(changes: Sequence[Change], has_skipped: bool) -> str:
    """The students whose grade moved, a line each, for the terminal."""
    moved = [change for change in changes if change.moved]
    lines = [f"since the previous gradebook: {len(moved)} of {len(changes)} students changed"]
    for change in moved:
        cells = change.cells()
        detail = ", ".join(
            part
            for part in (
                f"now passing {cells['now_passed'].replace(';', ', ')}" if change.now_passed else "",
                f"now failing {cells['now_failing'].replace(';', ', ')}" if change.now_failing else "",
            )
            if part
        )
        lines.append(f"  {change.student}: {cells['score_before']} -> {cells['score_after']}  {detail}".rstrip())
    if not has_skipped:
        lines.append("  (the previous gradebook has no skipped_checks column: its skipped checks count as passed)")
    return "\n".join(lines) + "\n"
