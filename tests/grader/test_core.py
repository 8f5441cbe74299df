"""The check registry and the loop that runs checks: order, skips, timeouts, crashes and partial credit."""

import asyncio
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from grader.checks import TOPICS
from grader.context import Context
from grader.core import PROFILE_ORDER, REGISTRY, Check, CheckResult, Failure, run_check, select
from grader.grade import _Grading
from tests.grader.stages.advanced import STAGES as ADVANCED_STAGES
from tests.grader.stages.exercises import STAGES as EXERCISE_STAGES
from tests.grader.stages.medium import STAGES as MEDIUM_STAGES


class _Lab:
    """The part of a Context that the run loop reads."""

    def __init__(self, lab: str) -> None:
        self.lab = lab


def _run(check: Check, results: dict[str, CheckResult] | None = None, lab: str = "medium") -> CheckResult:
    return asyncio.run(run_check(check, cast("Context", _Lab(lab)), results or {}))


def _check(function: Any, **options: Any) -> Check:
    return Check(f"test.{function.__name__}", "a test check", 4, function, **options)


def test_every_check_is_well_formed() -> None:
    """Each check has a statement, points, a known topic and profile, and prerequisites that run before it."""
    for check in REGISTRY.values():
        assert check.title and not check.title.startswith(check.id), check.id
        assert check.points > 0 and check.timeout > 0, check.id
        assert check.module in TOPICS and check.profile in PROFILE_ORDER, check.id
        for needed in check.depends_on:
            assert needed in REGISTRY, f"{check.id} needs the unknown {needed}"
            assert set(check.labs) <= set(REGISTRY[needed].labs), f"{check.id} needs {needed} in every lab"
            order = PROFILE_ORDER.index
            assert order(REGISTRY[needed].profile) <= order(check.profile), f"{check.id} runs before {needed}"


@pytest.mark.parametrize("lab", ["medium", "advanced"])
def test_selection_runs_prerequisites_first(lab: str) -> None:
    """Every lab's checks come out with each prerequisite before the checks that need it."""
    selected = select(lab)  # type: ignore[arg-type]
    position = {check.id: index for index, check in enumerate(selected)}
    for check in selected:
        assert all(position[needed] < position[check.id] for needed in check.dependencies(lab)), check.id  # type: ignore[arg-type]


def test_the_advanced_lab_reruns_the_medium_checks_after_logging_in() -> None:
    """The advanced selection holds every medium check; those that call the API need auth.login first."""
    advanced = {check.id: check for check in select("advanced")}
    assert {check.id for check in select("medium")} <= set(advanced)
    assert "auth.login" in advanced["api.query_shape"].dependencies("advanced")
    assert "auth.login" not in advanced["api.health"].dependencies("advanced")


def test_only_selects_the_named_checks_and_what_they_need() -> None:
    """--only takes ids or topics and adds the prerequisites."""
    chosen = [check.id for check in select("medium", ["streaming.tokens_join", "load"])]
    assert chosen[:4] == ["api.query_shape", "streaming.content_type", "streaming.event_order", "streaming.tokens_join"]
    assert {"load.concurrent", "load.errors_under_load", "load.p95_under_load"} <= set(chosen)
    assert not any(name.startswith(("sessions.", "errors.")) for name in chosen)


def test_every_check_is_shown_to_fail_by_a_broken_stage() -> None:
    """The broken stages of the medium and advanced tests, together, make every check fail at least once."""
    failing = {name for stage in [*MEDIUM_STAGES, *ADVANCED_STAGES, *EXERCISE_STAGES] for name in stage.failed}
    assert set(REGISTRY) - failing == set()


def test_a_passing_check_earns_its_points() -> None:
    async def fine(ctx: Context) -> None:
        return None

    result = _run(_check(fine))
    assert (result.status, result.points, result.feedback) == ("passed", 4.0, "")


def test_a_failure_reports_expected_observed_cause_and_hint() -> None:
    async def wrong(ctx: Context) -> None:
        raise Failure("HTTP 200", "HTTP 500", cause="a crash")

    result = _run(_check(wrong, hint="app/main.py: health"))
    assert (result.status, result.points) == ("failed", 0.0)
    assert result.feedback.splitlines() == [
        "expected: HTTP 200",
        "observed: HTTP 500",
        "likely cause: a crash",
        "look at: app/main.py: health",
    ]


def test_a_hint_can_name_each_lab_its_own_todo() -> None:
    async def wrong(ctx: Context) -> None:
        raise Failure("a", "b")

    check = _check(wrong, hint={"medium": "TODO 11: middleware", "advanced": "TODO 16: rate_limit"})
    assert _run(check).feedback.endswith("look at: TODO 11: middleware")
    assert _run(check, lab="advanced").feedback.endswith("look at: TODO 16: rate_limit")


def test_partial_credit_keeps_a_share_of_the_points() -> None:
    async def banded(ctx: Context) -> None:
        raise Failure("p95 within 1 s", "p95 1.5 s", credit=0.5)

    result = _run(_check(banded))
    assert (result.status, result.points) == ("failed", 2.0)


def test_a_check_whose_prerequisite_failed_is_skipped_and_not_run() -> None:
    ran = []

    async def dependent(ctx: Context) -> None:
        ran.append(True)

    earlier = _run(_check(dependent))
    earlier.status = "failed"
    result = _run(_check(dependent, depends_on=("test.first",)), {"test.first": earlier})
    assert ran == [True]  # only the first run
    assert (result.status, result.points) == ("skipped", 0.0)
    assert result.feedback == "skipped: needs test.first to pass first"


def test_a_check_that_hangs_fails_at_its_timeout() -> None:
    async def hangs(ctx: Context) -> None:
        await asyncio.sleep(30)

    result = _run(_check(hangs, timeout=0.2))
    assert result.status == "failed" and "within 0.2 s" in result.expected
    assert result.duration < 5


def test_a_transport_error_or_a_crash_is_a_failed_check_not_a_crash_of_the_grader() -> None:
    async def refused(ctx: Context) -> None:
        raise httpx.ConnectError("connection refused")

    async def confused(ctx: Context) -> None:
        raise KeyError("response")

    assert "connection refused" in _run(_check(refused)).observed
    assert "KeyError" in _run(_check(confused)).observed


def test_an_alongside_check_runs_while_the_later_checks_do_and_is_waited_for() -> None:
    """An `alongside` check overlaps the checks after it; one that needs it waits for its result, and is
    skipped when it failed; the batch ends only when every check has a result."""
    order: list[str] = []

    async def scenario() -> dict[str, CheckResult]:
        later_ran = asyncio.Event()

        async def slow(ctx: Context) -> None:  # ends only once a later check has run: it must not block them
            await asyncio.wait_for(later_ran.wait(), 5)
            order.append("slow")

        async def failing(ctx: Context) -> None:
            raise Failure("something", "nothing")

        async def later(ctx: Context) -> None:
            order.append("later")
            later_ran.set()

        async def needs_slow(ctx: Context) -> None:
            order.append("needs_slow")

        async def needs_failing(ctx: Context) -> None:
            order.append("needs_failing")

        batch = [
            _check(slow, alongside=True),
            _check(failing, alongside=True),
            _check(later),
            _check(needs_slow, depends_on=("test.slow",)),
            _check(needs_failing, depends_on=("test.failing",)),
        ]
        grading = _Grading(Path(), "medium", Path(), 1.0, say=lambda _: None, show=lambda _: None)
        await grading.check(cast("Context", _Lab("medium")), batch)
        return grading.results

    results = asyncio.run(scenario())
    assert order == ["later", "slow", "needs_slow"]
    assert {name: result.status for name, result in results.items()} == {
        "test.slow": "passed",
        "test.failing": "failed",
        "test.later": "passed",
        "test.needs_slow": "passed",
        "test.needs_failing": "skipped",
    }


def _context() -> Context:
    """A real Context (its memo and forget) for a stage that is never asked: the checks below ask nothing."""
    from grader.profiles import PROFILES, Setup
    from grader.runner import StageLog

    log = StageLog(Path("stdout.log"), Path("stderr.log"))
    return Context(Path(), "http://127.0.0.1:9", "medium", PROFILES["main"], Setup({}), log)


def test_a_timing_check_that_fails_is_retried_on_a_fresh_measurement_and_marked_flaky() -> None:
    """A `retry` check that fails once is run again, measuring anew (not reusing the memo of the first try);
    when the second try passes, it passes, marked flaky with what the first try saw. Two tries that fail
    alike are one plain failure, and a check without `retry` is never run twice."""
    measured: list[int] = []

    async def measure(ctx: Context) -> int:
        async def once() -> int:
            measured.append(len(measured))
            return len(measured)

        return await ctx.memo("latency", once)

    async def slow_then_fast(ctx: Context) -> None:
        if await measure(ctx) == 1:
            raise Failure("within 1 s", "1.5 s")

    async def always_slow(ctx: Context) -> None:
        await measure(ctx)
        raise Failure("within 1 s", "2 s")

    async def scenario() -> list[CheckResult]:
        results = []
        for function, retry in ((slow_then_fast, True), (always_slow, True), (always_slow, False)):
            ctx = _context()
            measured.clear()
            results.append(await run_check(_check(function, retry=retry), ctx, {}))
            results[-1].reason = str(len(measured))  # how many measurements the check made
            await ctx.aclose()
        return results

    flaky, failed, once = asyncio.run(scenario())
    assert (flaky.status, flaky.points, flaky.flaky, flaky.reason) == ("passed", 4.0, True, "2")
    assert "failed, 0/4: 1.5 s" in flaky.first_try and flaky.feedback.startswith("flaky: the first try")
    assert (failed.status, failed.flaky, failed.reason) == ("failed", False, "2")
    assert (once.status, once.flaky, once.reason) == ("failed", False, "1")


def test_checks_run_side_by_side_except_an_alone_one_which_runs_with_nothing_else() -> None:
    """In a grade, the checks of a start overlap (each once what it needs is done); an `alone` check starts only
    when the running ones have ended, and nothing starts while it runs."""
    running: set[str] = set()
    seen: dict[str, set[str]] = {}

    def work(name: str, seconds: float) -> Any:
        async def check(ctx: Context) -> None:
            seen[name] = set(running)
            running.add(name)
            await asyncio.sleep(seconds)
            seen[name] |= running - {name}
            running.discard(name)

        check.__name__ = name
        return check

    async def scenario() -> float:
        batch = [
            _check(work("first", 0.3)),
            _check(work("second", 0.3)),
            _check(work("timed", 0.3), alone=True),
            _check(work("third", 0.3)),
            _check(work("after", 0.1), depends_on=("test.third",)),
        ]
        grading = _Grading(Path(), "medium", Path(), 1.0, say=lambda _: None, show=lambda _: None)
        started = asyncio.get_running_loop().time()
        await grading.check(cast("Context", _Lab("medium")), batch)
        return asyncio.get_running_loop().time() - started

    seconds = asyncio.run(scenario())
    assert seen["first"] >= {"second"} and seen["second"] >= {"first"}, seen  # side by side
    assert seen["timed"] == set(), seen  # alone: nothing before it still ran, nothing started meanwhile
    assert "timed" not in seen["third"] and seen["after"] == set(), seen  # "after" waited for "third"
    assert seconds < 1.4  # 0.3 (first, second) + 0.3 (timed) + 0.3 (third) + 0.1 (after), not 5 in a row


def test_no_more_than_a_few_checks_of_one_start_run_at_once() -> None:
    """Side by side means at most CHECKS_AT_ONCE checks of one start at a time; the others wait their turn."""
    from grader.grade import CHECKS_AT_ONCE

    running: list[int] = [0, 0]  # now, most

    async def busy(ctx: Context) -> None:
        running[0] += 1
        running[1] = max(running)
        await asyncio.sleep(0.05)
        running[0] -= 1

    async def scenario() -> None:
        batch = [Check(f"test.busy{n}", "a test check", 1, busy) for n in range(3 * CHECKS_AT_ONCE)]
        grading = _Grading(Path(), "medium", Path(), 1.0, say=lambda _: None, show=lambda _: None)
        await grading.check(cast("Context", _Lab("medium")), batch)
        assert len(grading.results) == len(batch)

    asyncio.run(scenario())
    assert running[1] == CHECKS_AT_ONCE
