"""Repeated grades of one stage are judged alike only when every score and every check's status agree."""

from __future__ import annotations

from pathlib import Path

from grader import progression
from grader.repeatability import Grade, Stage, default_stages


def _stage(*grades: Grade) -> Stage:
    return Stage("s", Path(), "medium", list(grades))


def test_the_same_grade_every_time_is_stable_and_a_flaky_retry_does_not_change_that() -> None:
    """Equal scores and statuses are stable, even when a check needed its second try in one grade."""
    first = Grade(10, {"a": "passed", "b": "failed"}, [])
    again = Grade(10, {"a": "passed", "b": "failed"}, ["a"])
    stage = _stage(first, again, first)
    assert stage.stable and stage.wavering() == {}


def test_a_check_that_passes_once_and_fails_once_makes_the_stage_unstable() -> None:
    """A status that differs between grades is found, with how often each status came, even at equal scores."""
    stage = _stage(Grade(10, {"a": "passed", "b": "failed"}, []), Grade(10, {"a": "failed", "b": "passed"}, []))
    assert not stage.stable
    assert {cid: dict(counts) for cid, counts in stage.wavering().items()} == {
        "a": {"passed": 1, "failed": 1},
        "b": {"failed": 1, "passed": 1},
    }


def test_a_grade_that_could_not_be_made_is_neither_stable_nor_hidden() -> None:
    """An ungradable run is reported as an error, never counted as an agreeing grade."""
    stage = _stage(Grade(10, {"a": "passed"}, []), Grade(0, {}, [], "the stage did not start"))
    assert not stage.stable and stage.errors == ["the stage did not start"]


def test_the_default_stages_span_no_marks_to_full_marks(tmp_path: Path) -> None:
    """Both solutions, the starter, and the starter a third and two thirds done (written out as stages)."""
    stages = default_stages(tmp_path)
    order = progression.sheet_order(progression.starters.LABS[0])
    assert [s.name for s in stages][:3] == ["medium-solution", "advanced-solution", "medium-starter"]
    partial = stages[3:]
    assert [s.name for s in partial] == [
        f"medium-{k}-of-{len(order)}-done" for k in (len(order) // 3, len(order) * 2 // 3)
    ]
    for stage in partial:
        assert (stage.path / "app" / "main.py").is_file()
    prompts = [sum(f.read_text().count("# TODO ") for f in s.path.rglob("*.py")) for s in partial]
    assert prompts == [len(order) - len(order) // 3, len(order) - len(order) * 2 // 3]
