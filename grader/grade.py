"""Grading one stage: which lab it is, one server start per profile its checks need, and the report."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sandbox
from .context import Context
from .core import PROFILE_ORDER, Check, CheckResult, Lab, Report, blocked_by, run_check, skipped
from .profiles import PROFILES, Profile, prepared
from .runner import ForkServer, StageStartError, run_stage, stage_env

ADVANCED_FILES = ("app/auth.py", "app/routes/auth.py", "app/cache.py")
Say = Callable[[str], None]
# Checks of one start at once: enough to overlap their waits on the model, few enough that on a busy machine no
# check waits behind a pile of others' work in the one stage process until its timeout.
CHECKS_AT_ONCE = 4
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


class Turns:
    """Who may run now: any number of holders of one kind side by side, or one `exclusive` holder alone.

    First come, first served: once a holder of another kind (or an exclusive one) waits, whoever asks after
    it waits for it, so that it is never starved by a stream of shorter turns.
    """

    def __init__(self, most: int = 0) -> None:
        self.most = most  # holders at once at most (0: no limit)
        self._waiting: collections.deque[tuple[str, bool, asyncio.Future[None]]] = collections.deque()
        self._holders = 0
        self._kind = ""
        self._exclusive = False

    @asynccontextmanager
    async def turn(self, kind: str, *, exclusive: bool = False) -> AsyncIterator[None]:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((kind, exclusive, granted))
        self._grant()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release()
            self._grant()
            raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        self._holders -= 1
        self._exclusive = self._exclusive and self._holders > 0
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            kind, exclusive, granted = self._waiting[0]
            if granted.done():  # its waiter was cancelled
                self._waiting.popleft()
                continue
            if self._holders and (exclusive or self._exclusive or kind != self._kind):
                return
            if self.most and self._holders >= self.most:
                return
            self._waiting.popleft()
            self._holders, self._kind, self._exclusive = self._holders + 1, kind, exclusive
            granted.set_result(None)


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
    server: ForkServer | None = None
    starts: Turns = field(default_factory=Turns)  # starts load the machine: no `alone` check runs meanwhile
    # A cold start (no fork server) is seconds of CPU importing the stage's libraries: a core each at most, so that
    # six profiles starting at once on two cores do not each run out of their own start timeout.
    cold_starts: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(max(1, os.cpu_count() or 1)))
    servers: dict[str, Turns] = field(default_factory=dict)  # per start: its checks, or one `alone` check
    finished: dict[str, asyncio.Event] = field(default_factory=dict)  # one per check of the grade

    async def start(self, profile: Profile, stack: AsyncExitStack) -> Context:
        """Start the stage with the profile; `stack` stops it (and closes what it used) when it closes.

        No `alone` check runs while a start loads the machine.
        """
        async with self.starts.turn("start"), self.cold_starts if self.server is None else contextlib.nullcontext():
            setup = await stack.enter_async_context(prepared(profile, self.secret_key, self.data, self.stage))
            running = await stack.enter_async_context(
                run_stage(
                    self.stage,
                    setup.env,
                    start_timeout=self.start_timeout,
                    command=setup.command,
                    server=self.server,
                )
            )
            self.say(f"the stage answers on {running.url} ({profile.name} profile: {profile.purpose})")
            ctx = Context(self.stage, running.url, self.lab, profile, setup, running.log, self.notes)
            ctx.server = self.server
            stack.push_async_callback(ctx.aclose)
            if not profile.image:  # the image's checks need no login, and its start is busy enough
                await ctx.log_in_demo_users()
        return ctx

    async def check(self, ctx: Context, batch: list[Check], *, serial: bool = False) -> None:
        """The batch's checks, each once the checks it needs are done: side by side, or with `serial` in order
        (except that an `alongside` check, once its turn comes, runs while the later ones do).

        Side by side, the `alone` checks come last (after the others that do not need them), so that what the
        other starts' checks need of this one is done before its alone turns hold it.
        """
        pending: list[asyncio.Task[None]] = []
        for check in batch:
            self.finished.setdefault(check.id, asyncio.Event())
        after = [] if serial else _not_needing_alone(batch, self.lab)
        try:
            for check in batch:
                first = after if check.alone else []
                task = asyncio.create_task(self.run(check, ctx, first))
                pending.append(task)
                if serial and not check.alongside:
                    await asyncio.shield(task)
            await asyncio.gather(*pending)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run(self, check: Check, ctx: Context, first: Sequence[Check] = ()) -> None:
        """One check, once the checks it needs (on any start) and the `first` ones are done, in its turn."""
        await self.needed(check)
        for other in first:
            await self.finished[other.id].wait()
        server = self.servers.setdefault(getattr(getattr(ctx, "profile", None), "name", ""), Turns(CHECKS_AT_ONCE))
        async with contextlib.AsyncExitStack() as turns:
            if check.alone:  # nothing else on its server, and no start anywhere
                await turns.enter_async_context(self.starts.turn("quiet"))
            await turns.enter_async_context(server.turn("check", exclusive=check.alone))
            result = await run_check(check, ctx, self.results)
        self.record(result)

    async def needed(self, check: Check) -> None:
        for name in check.dependencies(self.lab):
            if (event := self.finished.get(name)) is not None:
                await event.wait()

    def record(self, result: CheckResult) -> None:
        self.results[result.check.id] = result
        self.finished.setdefault(result.check.id, asyncio.Event()).set()
        self.show(result)


def _not_needing_alone(batch: list[Check], lab: Lab) -> list[Check]:
    """The checks of the batch that are not `alone` and need no alone check, even through others."""
    by_id = {check.id: check for check in batch}
    needing: set[str] = {check.id for check in batch if check.alone}
    changed = True
    while changed:
        grown = {c.id for c in batch if any(name in needing for name in c.dependencies(lab) if name in by_id)}
        changed = not grown <= needing
        needing |= grown
    return [check for check in batch if check.id not in needing]


@asynccontextmanager
async def _fork_server(stage: Path, say: Say) -> AsyncIterator[ForkServer | None]:
    """The stage's fork server for this grade (None: each start is a cold one); GRADER_FORK=0 turns it off."""
    server = None
    if os.environ.get("GRADER_FORK", "1") != "0" and not sandbox.enabled():  # its children are not contained
        server = await ForkServer.open(stage, stage_env({"PYTHONUNBUFFERED": "1"}))
        if server is None:
            say("starting each profile cold: the stage cannot be forked from one import of its libraries here")
    try:
        yield server
    finally:
        if server is not None:
            await asyncio.to_thread(server.close)


async def grade(
    stage: Path, lab: Lab, checks: list[Check], *, start_timeout: float = 60.0, say: Say, show: Show
) -> Report:
    """Run `checks` against the stage; a first start that fails makes the report ungradable (exit 2).

    Every profile is started at once (forked from one import of the stage's libraries), except one on
    another start's database, which starts once that one has stopped. The checks of every start run side by
    side, each once the checks it needs are done; an `alone` check (it times the stage or counts what it
    served) runs with nothing else on its server and while no start loads the machine, and a `serial`
    profile's checks run in order.
    """
    report = Report(str(stage), lab, [])
    started = time.perf_counter()
    batches = {name: [c for c in checks if c.profile == name] for name in PROFILE_ORDER}
    names = [name for name, batch in batches.items() if batch]
    if not names:
        return report
    with tempfile.TemporaryDirectory(prefix=sandbox.DATA_PREFIX) as data:
        grading = _Grading(stage, lab, Path(data), start_timeout, say, show)
        grading.finished = {check.id: asyncio.Event() for check in checks}
        say(f"starting the stage, once per profile: {', '.join(names)}")
        try:
            async with _fork_server(stage, say) as grading.server:
                await _check_profiles(grading, names, batches)
        except* StageStartError as group:
            error = group.exceptions[0]
            assert isinstance(error, StageStartError)
            report.error, report.log_tail = f"the stage did not start: {error.message}", error.log_tail
    report.results = [grading.results[check.id] for check in checks if check.id in grading.results]
    report.duration = time.perf_counter() - started
    return report


async def _check_profiles(grading: _Grading, names: list[str], batches: dict[str, list[Check]]) -> None:
    """Start and check every profile; the first one's start failing ends the grade (StageStartError)."""
    first = names[0]
    done: dict[str, asyncio.Event] = {name: asyncio.Event() for name in names}

    async def profile(name: str) -> None:
        try:
            if after := PROFILES[name].database:  # a restart: once the start whose database it takes has stopped
                if after in done:
                    await done[after].wait()
                if _skip_all(grading, batches[name]):
                    return
            async with AsyncExitStack() as stack:
                try:
                    ctx = await grading.start(PROFILES[name], stack)
                except StageStartError as error:
                    if name == first:
                        raise
                    await _not_started(grading, name, error, batches[name])
                    return
                await grading.check(ctx, batches[name], serial=PROFILES[name].serial)
        finally:
            done[name].set()

    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(profile(name))


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


async def _not_started(grading: _Grading, profile: str, error: StageStartError, batch: list[Check]) -> None:
    """Each check of a profile whose start failed: skipped when a check it needs failed, else failed."""
    tail = " | ".join(error.log_tail.splitlines()[-4:])
    expected = f"the stage to start with the {profile} profile ({PROFILES[profile].purpose})"
    observed = f"{error.message}: {tail}" if tail else error.message
    for check in batch:
        await grading.needed(check)
        if blocked := blocked_by(check, grading.lab, grading.results):
            grading.record(skipped(check, blocked))
        else:
            grading.record(CheckResult(check, "failed", 0.0, expected, observed, hint=check.hint_for(grading.lab)))
