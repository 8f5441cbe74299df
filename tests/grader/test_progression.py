"""The score ladder's reading of hints and its two properties, judged on ladders whose outcome is known."""

from __future__ import annotations

import pytest

from grader import progression, starters
from grader.progression import Outcome, Step, judge, named_todos

MEDIUM = starters.LABS[0]


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        ("TODO 5: app/agent_service.py: process_query", {5}),
        ("TODO 5 and 7: app/agent_service.py: process_query, and app/routes/agent.py: query", {5, 7}),
        ("TODO 5, 6 and 8: app/cache.py and app/agent_service.py", {5, 6, 8}),
        ("TODO 13 to 15: the owner's sessions and tasks", {13, 14, 15}),
        ("app/main.py: create_app (FastAPI's docs_url and openapi_url)", set()),
        ("", set()),
    ],
)
def test_named_todos_reads_every_form_the_hints_use(hint: str, expected: set[int]) -> None:
    """A `look at` line names its TODOs as one number, a list with "and", or a range with "to"."""
    assert named_todos(hint) == expected


def _step(done: tuple[int, ...], **outcomes: tuple[str, float, set[int]]) -> Step:
    step = Step(done, max_score=4)
    step.outcomes = {
        cid: Outcome(status, points, frozenset(todos)) for cid, (status, points, todos) in outcomes.items()
    }
    step.score = sum(outcome.points for outcome in step.outcomes.values())
    return step


HINTS = {"a": frozenset({1}), "b": frozenset({2}), "c": frozenset({3})}


def test_a_ladder_where_each_todo_earns_its_own_check_passes() -> None:
    """Each TODO turns its own check green and every failure names a TODO still to do: both properties hold."""
    ladder = [
        _step((), a=("failed", 0, {1}), b=("skipped", 0, set()), c=("failed", 0, {3})),
        _step((1,), a=("passed", 2, set()), b=("failed", 0, {2}), c=("failed", 0, {3})),
        _step((1, 2), a=("passed", 2, set()), b=("passed", 1, set()), c=("failed", 0, {3})),
        _step((1, 2, 3), a=("passed", 2, set()), b=("passed", 1, set()), c=("passed", 1, set())),
    ]
    verdict = judge(ladder, [1, 2, 3], HINTS)
    assert verdict.ok, verdict


def test_a_todo_that_earns_nothing_and_a_pointer_at_a_done_todo_are_both_found() -> None:
    """TODO 2 raises no score (its check waits on TODO 3), and check b then still blames TODO 2, already done."""
    ladder = [
        _step((), a=("failed", 0, {1}), b=("failed", 0, {2}), c=("failed", 0, {3})),
        _step((1,), a=("passed", 2, set()), b=("failed", 0, {2}), c=("failed", 0, {3})),
        _step((1, 2), a=("passed", 2, set()), b=("failed", 0, {2}), c=("failed", 0, {3})),
        _step((1, 2, 3), a=("passed", 2, set()), b=("passed", 1, set()), c=("passed", 1, set())),
    ]
    verdict = judge(ladder, [1, 2, 3], HINTS)
    assert verdict.unpaid == (2,)
    assert verdict.misleading == {2: ["b"]}
    assert not verdict.ok


def test_a_score_raised_only_through_another_todo_s_check_does_not_pay() -> None:
    """A rise through a check whose `look at` names another TODO is not the step paying for itself."""
    ladder = [
        _step((), a=("failed", 0, {1}), c=("failed", 0, {3})),
        _step((1,), a=("failed", 0, {1}), c=("passed", 1, set())),
    ]
    assert judge(ladder, [1, 3], HINTS).unpaid == (1,)


def test_a_failure_that_names_no_todo_is_misleading() -> None:
    """A failed check whose `look at` names no TODO at all points the student nowhere they can act."""
    ladder = [_step((), a=("failed", 0, set()))]
    assert judge(ladder, [1], HINTS).misleading == {0: ["a"]}


def test_the_rungs_are_the_sheet_s_todos_and_the_ends_are_the_starter_and_the_solution() -> None:
    """The sheet lists every TODO once; with none done the tree is the starter, with all done the solution."""
    order = progression.sheet_order(MEDIUM)
    solution = progression.ROOT / MEDIUM.solution
    assert sorted(order) == [todo.number for todo in starters.todos(solution)]
    assert starters.render(solution, only=set(order)) == starters.render(solution)
    done = starters.render(solution, only=set())
    assert not [path for path, file in done.items() if b"BEGIN SOLUTION" in file.content]
    assert not [path for path, file in done.items() if b'NotImplementedError("TODO' in file.content]
