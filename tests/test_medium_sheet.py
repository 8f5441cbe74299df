"""The medium lab sheet's minutes: its TODO table, its steps and exercises and its Duration line agree, and fit the
course's slots (90 minutes for the core; 15, 15, 15 and 10 for the four optional exercises)."""

from __future__ import annotations

import re

from tests.support.stage import ROOT

SHEET = (ROOT / "medium_lab" / "README.md").read_text()
CORE_MINUTES = 90
EXERCISE_SLOTS = {"validation": 15, "error handling": 15, "background tasks": 15, "documentation": 10}
_ROW = re.compile(r"^\| (\d+) \|.*\| (\d+) min \|[^|]*\|$")
# A heading with its TODOs (one, or a range with an en dash) and minutes: "### Exercise 3: x (TODO 13, 10 min)"
_PART = re.compile(r"^### (Step|Exercise) \d+: (.+) \(TODOs? (\d+)(?:–(\d+))?, (\d+) min\)$")


def _table() -> dict[int, int]:
    """Each TODO's minutes, from the sheet's TODO table."""
    return {int(m[1]): int(m[2]) for line in SHEET.splitlines() if (m := _ROW.match(line))}


def _parts() -> list[tuple[str, str, list[int], int]]:
    """Each step and exercise heading: (kind, name, its TODOs, its minutes)."""
    parts = []
    for line in SHEET.splitlines():
        if match := _PART.match(line):
            kind, name, low, high, minutes = match.groups()
            parts.append((kind, name, list(range(int(low), int(high or low) + 1)), int(minutes)))
    return parts


def test_each_step_and_exercise_states_the_minutes_of_its_todos_and_covers_the_table() -> None:
    """A heading's minutes are the sum of its TODOs' minutes in the table, and every TODO is in one heading."""
    table, parts = _table(), _parts()
    assert parts and table
    for kind, name, todos, minutes in parts:
        assert minutes == sum(table[todo] for todo in todos), f"{kind} {name}: {minutes} min for TODOs {todos}"
    assert sorted(todo for _, _, todos, _ in parts for todo in todos) == sorted(table)


def test_the_core_and_each_optional_exercise_fit_the_course_slots_and_the_duration_line_says_so() -> None:
    """The steps add up to at most 90 minutes, each exercise to at most its slot; the Duration line gives the
    core's total, the exercises' total and each exercise's minutes, and the exercises are marked optional."""
    parts = _parts()
    core = sum(minutes for kind, _, _, minutes in parts if kind == "Step")
    exercises = {name: minutes for kind, name, _, minutes in parts if kind == "Exercise"}
    assert core <= CORE_MINUTES, f"the core steps take {core} minutes"
    assert sorted(exercises) == sorted(EXERCISE_SLOTS), exercises
    for name, minutes in exercises.items():
        assert minutes <= EXERCISE_SLOTS[name], f"the {name} exercise takes {minutes} minutes"
    duration = " ".join(SHEET.split("**Duration:**", 1)[1].split("**Objective:**", 1)[0].split())
    assert f"{core} minutes" in duration and f"{sum(exercises.values())} minutes in all" in duration, duration
    for name, minutes in exercises.items():
        assert re.search(rf"{name} \(TODOs? [\d–]+\) {minutes}\b", duration), (name, duration)
    assert "## Exercises (optional)" in SHEET
