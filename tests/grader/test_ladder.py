"""The score ladder of the medium lab, graded for real: every TODO pays, and no feedback points at a done TODO.

The advanced lab's ladder joins this test once that lab is rebuilt so that its early TODOs earn points of
their own (today TODOs 1-9 wait on the login that TODOs 9-12 bring).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import pytest

from grader import progression, starters

LADDER_LABS = [lab for lab in starters.LABS if lab.name == "medium"]
# Two rungs at once on two cores. The grader's timing checks (load, streaming) allow for a busy machine, not
# for another grade beside them: a rung that breaches a property is graded again, alone, before it counts.
JOBS = int(os.environ.get("LADDER_JOBS", "2"))


def _breaches(ladder: list[progression.Step], verdict: progression.Verdict) -> str:
    """Every breach of either property, one a line, with the rung's score and what its failures named."""
    by_rung = {len(step.done): step for step in ladder}
    lines = [f"ladder: {' '.join(f'{step.score:g}' for step in ladder)} of {ladder[-1].max_score}"]
    for k in verdict.errors:
        lines.append(f"with {k} TODOs done the stage could not be graded: {by_rung[k].error}")
    for k in verdict.unpaid:
        step = by_rung[k]
        lines.append(f"with {k} TODOs done (last TODO {step.done[-1]}) no check that names it earns more")
    for k, found in verdict.misleading.items():
        named = {cid: sorted(by_rung[k].outcomes[cid].todos) for cid in found}
        lines.append(f"with {k} TODOs done, failed checks name only TODOs already done (or none): {named}")
    return "\n".join(lines)


def _suspects(verdict: progression.Verdict) -> list[int]:
    """The rungs a breach involves: a misleading or ungraded rung, and both sides of a step that did not pay."""
    return sorted({*verdict.misleading, *verdict.errors, *verdict.unpaid, *(k - 1 for k in verdict.unpaid)})


@pytest.mark.timeout(1200)  # 15 rungs, each a whole grade: about 4 minutes here, longer on a busy machine
@pytest.mark.parametrize("lab", LADDER_LABS, ids=[lab.name for lab in LADDER_LABS])
def test_each_todo_in_the_sheets_order_raises_the_score_and_every_failure_names_a_missing_todo(
    lab: starters.Lab,
) -> None:
    """The starter with the sheet's TODOs 1..k done, graded for every k: each rung scores more than the one
    before through a check whose `look at` names the TODO just done, and every failed check at every rung
    names a TODO that is still missing."""
    order = progression.sheet_order(lab)
    started = time.monotonic()
    ladder = progression.climb(lab, range(len(order) + 1), jobs=JOBS)
    hints = progression.static_hints(lab.name)  # type: ignore[arg-type]
    verdict = progression.judge(ladder, order, hints)
    first = "" if verdict.ok else f"graded {JOBS} at a time:\n{_breaches(ladder, verdict)}\nthen alone:\n"
    if not verdict.ok:
        with tempfile.TemporaryDirectory(prefix="ladder-again-") as tmp:
            for k in _suspects(verdict):
                ladder[k] = progression.grade_step(lab, order, k, Path(tmp))
        verdict = progression.judge(ladder, order, hints)
    print(f"{lab.name} ladder: {len(ladder)} rungs in {time.monotonic() - started:.0f} s\n{first}", end="")
    assert verdict.ok, first + _breaches(ladder, verdict)
    assert ladder[-1].score == ladder[-1].max_score, _breaches(ladder, verdict)
