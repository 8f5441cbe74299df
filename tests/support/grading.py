"""Grading stages in the grader's own tests: copies of a stage broken on purpose, graded in-process."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grader.checks  # noqa: F401 - registers the checks
from grader.core import REGISTRY, Lab, Report, select
from grader.grade import grade

# file (relative to the stage) -> the (old, new) text replacements to make in it
Patches = dict[str, list[tuple[str, str]]]


@dataclass(frozen=True)
class BrokenStage:
    """A stage with defects put in on purpose, and exactly what grading it (with `only`) must find."""

    name: str
    patches: Patches
    only: tuple[str, ...]
    failed: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    lab: Lab = "medium"
    credit: dict[str, float] = field(default_factory=dict)  # partial points a failed check keeps

    @property
    def expected(self) -> dict[str, str]:
        """The status of every check that must not pass."""
        return dict.fromkeys(self.failed, "failed") | dict.fromkeys(self.skipped, "skipped")

    def points_lost(self) -> float:
        return sum(REGISTRY[name].points * (1 - self.credit.get(name, 0.0)) for name in self.expected)


def broken_copy(source: Path, target: Path, patches: Patches) -> Path:
    """Copy a stage (without its tests and caches) and make each replacement, whose text must occur once."""
    ignored = shutil.ignore_patterns("tests", "__pycache__", ".mypy_cache", "*.db", ".env")
    shutil.copytree(source, target, ignore=ignored)
    for name, replacements in patches.items():
        path = target / name
        text = path.read_text()
        for old, new in replacements:
            assert text.count(old) == 1, f"{name}: the text to replace occurs {text.count(old)} times: {old!r}"
            text = text.replace(old, new)
        path.write_text(text)
    return target


def grade_stage(stage: Path, lab: Lab, only: Iterable[str] = ()) -> Report:
    """Grade `stage` as the CLI does, quietly, and return the report."""
    checks = select(lab, only)
    return asyncio.run(grade(stage, lab, checks, start_timeout=60, say=lambda _: None, show=lambda _: None))


def outcome(report: Report) -> dict[str, str]:
    """Each check's status, without the passed ones."""
    return {result.check.id: result.status for result in report.results if result.status != "passed"}


def explain(report: Report) -> str:
    """The feedback of every check that did not pass, for an assertion message."""
    return "\n".join(f"{r.check.id}: {r.feedback}" for r in report.results if r.status != "passed") or report.error
