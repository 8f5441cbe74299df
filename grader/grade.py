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
from .core import PROFILE_ORDER, Check, CheckResult, Lab, Report, run_check
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
        setup = await stack.enter_async_context(prepared(profile, self.secret_key, self.data))
        running = await stack.enter_async_context(run_stage(self.stage, setup.env, start_timeout=self.start_timeout))
        self.say(f"the stage answers on {running.url} ({profile.name} profile: {profile.purpose})")
        ctx = Context(self.stage, running.url, self.lab, profile, setup, running.log, self.notes)
        stack.push_async_callback(ctx.aclose)
        await ctx.log_in_demo_users()
        return ctx

    async def check(self, ctx: Context, batch: list[Check]) -> None:
        for check in batch:
            self.record(await run_check(check, ctx, self.results))

    def record(self, result: CheckResult) -> None:
        self.results[result.check.id] = result
        self.show(result)


async def grade(
    stage: Path, lab: Lab, checks: list[Check], *, start_timeout: float = 60.0, say: Say, show: Show
) -> Report:
    """Run `checks` against the stage; a first start that fails makes the report ungradable (exit 2).

    The first profile's server runs alone (its checks time streaming and concurrency); the others are
    started together once it has stopped, and checked one after the other.
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
    report.results = list(grading.results.values())
    report.duration = time.perf_counter() - started
    return report


async def _check_the_others(grading: _Grading, names: list[str], batches: dict[str, list[Check]]) -> None:
    if not names:
        return
    grading.say(f"starting the stage again, once per profile: {', '.join(names)}")
    stacks = [AsyncExitStack() for _ in names]
    try:
        starts = [grading.start(PROFILES[name], stack) for name, stack in zip(names, stacks, strict=True)]
        contexts = await asyncio.gather(*starts, return_exceptions=True)
        for name, ctx, stack in zip(names, contexts, stacks, strict=True):
            if isinstance(ctx, StageStartError):
                for check in batches[name]:
                    grading.record(_not_started(check, name, ctx))
            elif isinstance(ctx, BaseException):
                raise ctx
            else:
                await grading.check(ctx, batches[name])
            await stack.aclose()
    finally:
        for stack in stacks:
            await stack.aclose()


def _not_started(check: Check, profile: str, error: StageStartError) -> CheckResult:
    tail = " | ".join(error.log_tail.splitlines()[-4:])
    expected, observed = f"the stage to start with the {profile} profile", f"{error.message}: {tail}"
    return CheckResult(check, "failed", 0.0, expected, observed)
