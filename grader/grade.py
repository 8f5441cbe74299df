"""Grading one stage: which lab it is, one server start per profile its checks need, and the report."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import Context
from .core import PROFILE_ORDER, Check, CheckResult, Lab, Report, blocked_by, run_check, skipped
from .profiles import PROFILES, Profile, prepared
from .runner import StageStartError, run_stage

ADVANCED_FILES = ("app/auth.py", "app/routes/auth.py", "app/cache.py")
Say = Callable[[str], None]
Show = Callable[[CheckResult], None]


def stage_problem(stage: Path) -> str:
    """Why `stage` is not a stage at all ('' when it looks like one)."""
    if not stage.is_dir():
        return f"no such folder: {stage}"
    if not (stage / "app" / "main.py").is_file():
        return f"{stage} has no app/main.py (a stage runs as `uvicorn app.main:app` from its folder)"
    return ""


def detect_lab(stage: Path) -> Lab:
    """The advanced lab's stages have its auth and cache modules; anything else is graded as the medium lab."""
    return "advanced" if any((stage / name).is_file() for name in ADVANCED_FILES) else "medium"


@dataclass
class _Grading:
    """What every start of one grade shares: the stage, a data folder, a secret key, notes and results."""

    stage: Path
    lab: Lab
    data: Path
    start_timeout: float
    say: Say
    show: Show
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # the auth checks sign with it
    notes: dict[str, Any] = field(default_factory=dict)
    results: dict[str, CheckResult] = field(default_factory=dict)

    async def start(self, profile: Profile, stack: AsyncExitStack) -> Context:
        """Start the stage with the profile; `stack` stops it (and closes what it used) when it closes."""
        setup = await stack.enter_async_context(prepared(profile, self.secret_key, self.data, self.stage))
        running = await stack.enter_async_context(
            run_stage(self.stage, setup.env, start_timeout=self.start_timeout, command=setup.command)
        )
        self.say(f"the stage answers on {running.url} ({profile.name} profile: {profile.purpose})")
        ctx = Context(self.stage, running.url, self.lab, profile, setup, running.log, self.notes)
        stack.push_async_callback(ctx.aclose)
        if not profile.image:  # the image's checks need no login, and its start is busy enough
            await ctx.log_in_demo_users()
        return ctx

    async def check(self, ctx: Context, batch: list[Check]) -> None:
        """The batch's checks in order, except that an `alongside` check, once its turn comes and the checks it
        needs are done, runs while the later ones do; a check that needs one waits for it."""
        pending: dict[str, asyncio.Task[None]] = {}
        try:
            for check in batch:
                needed = [pending[name] for name in check.dependencies(ctx.lab) if name in pending]
                if check.alongside:
                    pending[check.id] = asyncio.create_task(self._after(needed, check, ctx))
                else:
                    await asyncio.gather(*needed)
                    self.record(await run_check(check, ctx, self.results))
            await asyncio.gather(*pending.values())
        finally:
            for task in pending.values():
                task.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)

    async def _after(self, needed: list[asyncio.Task[None]], check: Check, ctx: Context) -> None:
        await asyncio.gather(*needed)
        self.record(await run_check(check, ctx, self.results))

    def record(self, result: CheckResult) -> None:
        self.results[result.check.id] = result
        self.show(result)


async def grade(
    stage: Path, lab: Lab, checks: list[Check], *, start_timeout: float = 60.0, say: Say, show: Show
) -> Report:
    """Run `checks` against the stage; a first start that fails makes the report ungradable (exit 2).

    The first profile's server runs alone (its checks time streaming and concurrency); the others are
    started together once it has stopped, and checked one after the other; a `late` profile is started
    once they answer, while they are checked.
    """
    report = Report(str(stage), lab, [])
    started = time.perf_counter()
    batches = {name: [c for c in checks if c.profile == name] for name in PROFILE_ORDER}
    names = [name for name, batch in batches.items() if batch]
    if not names:
        return report
    first, *others = names
    with tempfile.TemporaryDirectory(prefix="grader-data-") as data:
        grading = _Grading(stage, lab, Path(data), start_timeout, say, show)
        try:
            say(f"starting the stage ({first} profile)")
            async with AsyncExitStack() as stack:
                await grading.check(await grading.start(PROFILES[first], stack), batches[first])
        except StageStartError as error:
            report.error, report.log_tail = f"the stage did not start: {error.message}", error.log_tail
        else:
            await _check_the_others(grading, others, batches)
    report.results = [grading.results[check.id] for check in checks if check.id in grading.results]
    report.duration = time.perf_counter() - started
    return report


async def _check_the_others(grading: _Grading, names: list[str], batches: dict[str, list[Check]]) -> None:
    # A profile whose every check would be skipped (a prerequisite failed on the first start) is not started.
    names = [name for name in names if not _skip_all(grading, batches[name])]
    if not names:
        return
    now, later = [n for n in names if not PROFILES[n].late], [n for n in names if PROFILES[n].late]
    grading.say(f"starting the stage again, once per profile: {', '.join(now or later)}")
    stacks = {name: AsyncExitStack() for name in names}
    starting: dict[str, asyncio.Task[Context]] = {}
    try:
        started = await asyncio.gather(*(grading.start(PROFILES[n], stacks[n]) for n in now), return_exceptions=True)
        if later and now:
            grading.say(f"starting it for {', '.join(later)} while those are checked")
        starting = {name: asyncio.create_task(grading.start(PROFILES[name], stacks[name])) for name in later}
        for name, ctx in zip(now, started, strict=True):
            await _check_started(grading, name, ctx, batches[name], stacks[name])
        for name, task in starting.items():
            ctx = (await asyncio.gather(task, return_exceptions=True))[0]
            await _check_started(grading, name, ctx, batches[name], stacks[name])
    finally:
        for task in starting.values():
            task.cancel()
        await asyncio.gather(*starting.values(), return_exceptions=True)
        for stack in stacks.values():
            await stack.aclose()


async def _check_started(
    grading: _Grading, name: str, ctx: Context | BaseException, batch: list[Check], stack: AsyncExitStack
) -> None:
    """Check one profile's start, or say why each of its checks could not run; then stop it."""
    if isinstance(ctx, StageStartError):
        for check in batch:
            blocked = blocked_by(check, grading.lab, grading.results)
            grading.record(skipped(check, blocked) if blocked else _not_started(check, grading.lab, name, ctx))
    elif isinstance(ctx, BaseException):
        raise ctx
    else:
        await grading.check(ctx, batch)
    await stack.aclose()


def _skip_all(grading: _Grading, batch: list[Check]) -> bool:
    """Record the batch as skipped, and say so, when each of its checks needs one that did not pass."""
    results = dict(grading.results)
    for check in batch:
        if not (blocked := blocked_by(check, grading.lab, results)):
            return False
        results[check.id] = skipped(check, blocked)
    for check in batch:
        grading.record(results[check.id])
    return True


def _not_started(check: Check, lab: Lab, profile: str, error: StageStartError) -> CheckResult:
    tail = " | ".join(error.log_tail.splitlines()[-4:])
    expected = f"the stage to start with the {profile} profile ({PROFILES[profile].purpose})"
    observed = f"{error.message}: {tail}" if tail else error.message
    return CheckResult(check, "failed", 0.0, expected, observed, hint=check.hint_for(lab))
