"""The grader against the medium lab: the solution gets full marks, and each defect costs exactly its checks."""

import json
from pathlib import Path

import pytest

from grader.__main__ import main
from grader.core import REGISTRY
from tests.grader.stages.medium import STAGES
from tests.support.grading import BrokenStage, broken_copy, explain, grade_stage, outcome


@pytest.mark.timeout(300)  # a whole grade: half a minute here, longer on a busy machine
def test_the_medium_solution_gets_full_marks(medium_solution: Path, tmp_path: Path) -> None:
    """`python -m grader solutions/medium` passes every medium check and exits 0."""
    output = tmp_path / "grade.json"
    assert main([str(medium_solution), "--format", "json", "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert [check["id"] for check in report["checks"] if check["status"] != "passed"] == []
    assert report["score"] == report["max_score"] == sum(c.points for c in REGISTRY.values() if "medium" in c.labs)
    assert (report["lab"], report["error"]) == ("medium", "")


@pytest.mark.parametrize("stage", STAGES, ids=[stage.name for stage in STAGES])
def test_a_broken_stage_loses_exactly_its_checks(stage: BrokenStage, medium_solution: Path, tmp_path: Path) -> None:
    """The checks a defect breaks fail, those that need them are skipped, every other check passes."""
    copy = broken_copy(medium_solution, tmp_path / stage.name, stage.patches)
    report = grade_stage(copy, stage.lab, stage.only)
    assert outcome(report) == stage.expected, explain(report)
    assert report.max_score - report.score == pytest.approx(stage.points_lost())
    assert report.exit_code == 1
