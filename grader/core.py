"""The `@check` registry, the result model, and the loop that runs checks in dependency order with timeouts."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import httpx

from . import sandbox

if TYPE_CHECKING:
    from .context import Context

Lab = Literal["medium", "advanced"]
Status = Literal["passed", "failed", "skipped"]
BOTH_LABS: tuple[Lab, ...] = ("medium", "advanced")
ADVANCED: tuple[Lab, ...] = ("advanced",)
PROFILE_ORDER = ("main", "limits", "upstream", "redis_down", "restart", "postgres", "postgres_restart", "image")
LOGIN_CHECK = "auth.login"
CheckFunction = Callable[["Context"], Awaitable[None]]
Hint = str | Mapping[Lab, str]  # where to look: the same for both labs, or one per lab


class Failure(Exception):  # noqa: N818 - a verdict on the stage, not an error of ours
    """A check's verdict against the stage: what it expected, what it observed, the cause when it is recognised.

    `credit` is the share of the points still earned (banded checks give partial credit).
    """

    def __init__(self, expected: str, observed: str, *, cause: str = "", credit: float = 0.0) -> None:
        super().__init__(f"expected {expected}; observed {observed}")
        self.expected, self.observed, self.cause, self.credit = expected, observed, cause, credit


@dataclass(frozen=True)
class Check:
    """One registered check; `title` is the first line of its docstring, the statement a student reads."""

    id: str
    title: str
    points: int
    function: CheckFunction
    depends_on: tuple[str, ...] = ()
    labs: tuple[Lab, ...] = BOTH_LABS
    profile: str = "main"
    timeout: float = 20.0
    hint: Hint = field(default="", compare=False)  # a per-lab mapping is not hashable
    public: bool = False  # needs no login in the advanced lab
    # In a profile whose checks run one after another: when its turn comes, runs while the checks after it do.
    alongside: bool = False
    # Runs with nothing else of the grade running: it times the stage, or counts what the stage served.
    alone: bool = False
    # Timing-sensitive: a failure is tried once more before it counts; two tries that disagree mark it flaky.
    retry: bool = False

    @property
    def module(self) -> str:
        return self.id.split(".", 1)[0]

    def hint_for(self, lab: Lab) -> str:
        return self.hint if isinstance(self.hint, str) else self.hint.get(lab, "")

    def dependencies(self, lab: Lab) -> tuple[str, ...]:
        """What must pass first; in the advanced lab a shared check also needs the demo user's login."""
        if lab == "advanced" and "medium" in self.labs and not self.public:
            return (LOGIN_CHECK, *self.depends_on)
        return self.depends_on


REGISTRY: dict[str, Check] = {}
# The memo keys (`Context.memo`) the running check has read, so that its retry measures them again.
OBSERVED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("observed", default=None)


def check(
    points: int,
    *,
    depends_on: Iterable[str] = (),
    labs: tuple[Lab, ...] = BOTH_LABS,
    profile: str = "main",
    timeout: float = 20.0,
    hint: Hint = "",
    public: bool = False,
    alongside: bool = False,
    alone: bool = False,
    retry: bool = False,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register an async check function as `<module>.<name>`; a bare name in `depends_on` means this module."""

    def register(function: CheckFunction) -> CheckFunction:
        module = function.__module__.rsplit(".", 1)[-1]
        check_id = f"{module}.{function.__name__}"
        title = (function.__doc__ or check_id).strip().splitlines()[0]
        needs = tuple(name if "." in name else f"{module}.{name}" for name in depends_on)
        REGISTRY[check_id] = Check(
            check_id, title, points, function, needs, labs, profile, timeout, hint, public, alongside, alone, retry
        )
        return function

    return register


@dataclass
class CheckResult:
    """What one check found."""

    check: Check
    status: Status
    points: float
    expected: str = ""
    observed: str = ""
    cause: str = ""
    reason: str = ""  # why it was skipped
    hint: str = ""  # where to look, in the graded lab
    duration: float = 0.0
    flaky: bool = False  # a timing-sensitive check whose two tries disagreed; this result is the second's
    hidden: bool = False  # not shown to students until `Report.hidden_until` (see grader.visibility)
    first_try: str = ""  # what the first try found, when it was retried

    @property
    def flaky_note(self) -> str:
        """The line every report adds for a flaky check: what its first try found."""
        if not self.flaky:
            return ""
        return f"flaky: the first try found otherwise ({self.first_try}); this is the retry's result"

    @property
    def feedback(self) -> str:
        """The student-facing explanation: empty when passed (but for a flaky check's note)."""
        if self.status == "passed":
            return self.flaky_note
        if self.status == "skipped":
            return f"skipped: {self.reason}"
        lines = [f"expected: {self.expected}", f"observed: {self.observed}"]
        if self.cause:
            lines.append(f"likely cause: {self.cause}")
        if self.hint:
            lines.append(f"look at: {self.hint}")
        if self.flaky:
            lines.append(self.flaky_note)
        return "\n".join(lines)


@dataclass
class Report:
    """The whole grade of one stage: every result, or why the stage could not be graded."""

    stage: str
    lab: Lab
    results: list[CheckResult]
    duration: float = 0.0
    error: str = ""  # set when the stage could not be graded
    log_tail: str = ""
    hidden_until: str = ""  # when hidden checks are shown: a day, or "the due date"

    @property
    def score(self) -> float:
        return round(sum(result.points for result in self.results), 2)

    @property
    def shown(self) -> list[CheckResult]:
        """The results a student may see now: all but the hidden ones."""
        return [result for result in self.results if not result.hidden]

    @property
    def max_score(self) -> int:
        return sum(result.check.points for result in self.results)

    def count(self, status: Status) -> int:
        return sum(result.status == status for result in self.results)

    @property
    def exit_code(self) -> int:
        """0 every check passed, 1 some did not, 2 the stage could not be graded."""
        if self.error:
            return 2
        return 0 if all(result.status == "passed" for result in self.results) else 1


def select(lab: Lab, only: Iterable[str] = (), registry: dict[str, Check] | None = None) -> list[Check]:
    """The lab's checks (with `only`: those named by id or module, plus their prerequisites), prerequisites first."""
    registry = REGISTRY if registry is None else registry
    available = {cid: c for cid, c in registry.items() if lab in c.labs}
    names = set(only)
    wanted = [cid for cid, c in available.items() if not names or cid in names or c.module in names]
    ordered: list[Check] = []
    seen: set[str] = set()

    def visit(check_id: str) -> None:
        if check_id in seen or check_id not in available:
            return
        seen.add(check_id)
        for needed in available[check_id].dependencies(lab):
            visit(needed)
        ordered.append(available[check_id])

    for check_id in wanted:
        visit(check_id)
    return sorted(ordered, key=lambda c: PROFILE_ORDER.index(c.profile))  # stable: keeps the order within a profile


def blocked_by(check: Check, lab: Lab, results: Mapping[str, CheckResult]) -> list[str]:
    """The prerequisites of `check` that have run and did not pass."""
    return [name for name in check.dependencies(lab) if name in results and results[name].status != "passed"]


def skipped(check: Check, blocked: list[str]) -> CheckResult:
    return CheckResult(check, "skipped", 0.0, reason=f"needs {', '.join(blocked)} to pass first")


async def run_check(check: Check, ctx: Context, results: dict[str, CheckResult]) -> CheckResult:
    """Run one check under its timeout; skip it when a prerequisite did not pass. Never raises for the stage.

    A `retry` check that fails is run once more, on fresh observations (what it measured is measured again);
    the second try's result counts, marked flaky when the two tries disagree.
    """
    if blocked := blocked_by(check, ctx.lab, results):
        return skipped(check, blocked)
    observed: set[str] = set()
    token = OBSERVED.set(observed)
    try:
        first = await _try(check, ctx)
        if not check.retry or first.status == "passed":
            return first
        forget = getattr(ctx, "forget", None)  # a Context; the run loop's own tests pass a bare stand-in
        if forget is not None:
            forget(observed)
        second = await _try(check, ctx)
    finally:
        OBSERVED.reset(token)
    second.duration += first.duration
    if (second.status, second.points) != (first.status, first.points):
        second.flaky = True
        second.first_try = f"{first.status}, {first.points:g}/{check.points}: {first.observed or first.expected}"
    return second


async def _try(check: Check, ctx: Context) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(check.timeout):
            await check.function(ctx)
    except Failure as failure:
        credit = max(0.0, min(failure.credit, 1.0))
        result = CheckResult(check, "failed", round(check.points * credit, 2), failure.expected, failure.observed)
        result.cause = failure.cause
    except TimeoutError:
        expected = f"the check to finish within {check.timeout:g} s"
        result = CheckResult(check, "failed", 0.0, expected, "the stage was still not done answering")
        result.cause = "a request hangs: something blocks or never ends (see the stage's log)"
    except httpx.HTTPError as error:
        observed = f"the request failed: {type(error).__name__}: {error}"
        result = CheckResult(check, "failed", 0.0, "an HTTP answer", observed)
        result.cause = "the stage crashed, closed the connection or hung (see the stage's log)"
    except Exception as error:  # noqa: BLE001 - a check that crashes on an odd answer is a failed check
        observed = f"an answer the check could not read ({type(error).__name__}: {error})"
        result = CheckResult(check, "failed", 0.0, "an answer in the contract's shape", observed)
    else:
        result = CheckResult(check, "passed", float(check.points))
    result.hint = check.hint_for(ctx.lab) if result.status == "failed" else ""
    if result.status == "failed" and (limit := sandbox.limit_broken(getattr(getattr(ctx, "log", None), "stderr", ""))):
        result.cause = limit  # the sandbox stopped it, or refused it something: that is why it failed
    result.duration = time.perf_counter() - started
    return result
