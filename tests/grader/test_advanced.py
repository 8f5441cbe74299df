"""The grader against the advanced lab: full marks for the solution, exactly the lost checks for each defect.

The advanced-only checks are also proven against `stages/advanced_mini`, a stage these tests control: the
contract's auth, cache, rate limit, metrics, logs and health around a fake agent, independent of the solutions.
The checks of the image, the database and the load test read the files of a real stage, so they are proven
against broken copies of the solution (`stages/exercises.py`).
"""

import json
from pathlib import Path

import pytest

from grader.__main__ import main
from grader.core import REGISTRY
from tests.grader.stages import exercises
from tests.grader.stages.advanced import ADVANCED_ONLY, MINI, STAGES
from tests.support.grading import BrokenStage, broken_copy, explain, grade_stage, outcome
from tests.support.stage import ROOT

ADVANCED_SOLUTION = ROOT / "solutions" / "advanced"


@pytest.mark.skipif(not (ADVANCED_SOLUTION / "app" / "main.py").is_file(), reason="no advanced solution yet")
@pytest.mark.timeout(300)  # a whole grade: a minute here, longer on a busy machine
def test_the_advanced_solution_gets_full_marks_in_gradescope_format(tmp_path: Path) -> None:
    """`python -m grader solutions/advanced` passes every advanced check (the medium ones too) and exits 0."""
    results = tmp_path / "results.json"
    assert main([str(ADVANCED_SOLUTION), "--format", "gradescope", "--output", str(results)]) == 0
    document = json.loads(results.read_text())
    assert [test["name"] for test in document["tests"] if test["status"] != "passed"] == []
    assert (
        document["score"]
        == sum(test["max_score"] for test in document["tests"])
        == sum(check.points for check in REGISTRY.values())
    )


def test_the_stand_in_stage_passes_every_advanced_only_check() -> None:
    """Graded as it is, the stand-in stage loses no point on the advanced lab's own checks."""
    report = grade_stage(MINI, "advanced", ADVANCED_ONLY)
    assert outcome(report) == {}, explain(report)
    assert {"auth", "caching", "rate_limit", "metrics", "logging"} <= {r.check.module for r in report.results}


@pytest.mark.parametrize("stage", STAGES, ids=[stage.name for stage in STAGES])
def test_a_broken_stage_loses_exactly_its_checks(stage: BrokenStage, tmp_path: Path) -> None:
    """The checks a defect breaks fail, those that need them are skipped, every other check passes."""
    copy = broken_copy(MINI, tmp_path / stage.name, stage.patches)
    report = grade_stage(copy, stage.lab, stage.only)
    assert outcome(report) == stage.expected, explain(report)
    assert report.max_score - report.score == pytest.approx(stage.points_lost())


@pytest.mark.skipif(not (ADVANCED_SOLUTION / "app" / "main.py").is_file(), reason="no advanced solution yet")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", exercises.STAGES, ids=[stage.name for stage in exercises.STAGES])
def test_a_broken_copy_of_the_solution_loses_exactly_its_checks(stage: BrokenStage, tmp_path: Path) -> None:
    """A defect in the solution's Dockerfile, database or locustfile costs exactly the checks it breaks."""
    copy = broken_copy(ADVANCED_SOLUTION, tmp_path / stage.name, stage.patches)
    report = grade_stage(copy, stage.lab, stage.only)
    assert outcome(report) == stage.expected, explain(report)
    assert report.max_score - report.score == pytest.approx(stage.points_lost())
