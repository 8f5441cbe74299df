"""Checks hidden from students until a date: which they are, and whether one is hidden today.

An instructor names them by id or topic (`--hidden caching,auth.ownership`, or `GRADER_HIDDEN`), with the day
they are shown (`--hidden-until 2026-12-20`, or `GRADER_HIDDEN_UNTIL`); without a day they stay hidden until
the due date, which Gradescope knows (its `after_due_date`). Hidden checks still run and count. The reports
say which are hidden: JSON and JUnit carry each check's visibility, Gradescope's results.json its own
`visibility`, and the text and Markdown reports show a hidden check's line without its points or feedback.
The default is every check visible.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

from .core import REGISTRY, Lab, select

ENV_HIDDEN, ENV_UNTIL = "GRADER_HIDDEN", "GRADER_HIDDEN_UNTIL"
VISIBLE, AFTER_DUE_DATE = "visible", "after_due_date"  # Gradescope's names, used in every report


@dataclass(frozen=True)
class Visibility:
    """The hidden checks' ids, and the day they are shown (None: the due date)."""

    hidden: frozenset[str] = frozenset()
    until: dt.date | None = None

    def is_hidden(self, check_id: str, today: dt.date | None = None) -> bool:
        if check_id not in self.hidden:
            return False
        return self.until is None or (today or dt.date.today()) < self.until

    @property
    def shown(self) -> str:
        """When the hidden checks are shown, as a report says it."""
        return self.until.isoformat() if self.until else "the due date"


def parse(lab: Lab, spec: str, until: str = "") -> Visibility:
    """The visibility from a comma-separated list of check ids and topics, and a day (YYYY-MM-DD) or ""."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    checks = select(lab)
    topics = {check.module for check in checks}
    if unknown := [name for name in names if name not in REGISTRY and name not in topics]:
        raise ValueError(f"names no check or topic of the {lab} lab: {', '.join(unknown)}")
    hidden = frozenset(c.id for c in checks if c.id in names or c.module in names)
    try:
        day = dt.date.fromisoformat(until) if until else None
    except ValueError:
        raise ValueError(f"{until!r} is not a day (YYYY-MM-DD)") from None
    return Visibility(hidden, day)


def from_environment(lab: Lab, spec: str | None = None, until: str | None = None) -> Visibility:
    """The visibility from the options given, else from GRADER_HIDDEN and GRADER_HIDDEN_UNTIL."""
    return parse(lab, os.environ.get(ENV_HIDDEN, "") if spec is None else spec,
                 os.environ.get(ENV_UNTIL, "") if until is None else until)  # fmt: skip
