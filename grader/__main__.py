"""The command line: `python -m grader PATH [--lab ...] [--format ...] [--output FILE]` (exit 0, 1 or 2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import re
import signal
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from . import checks, reporters, visibility
from .core import REGISTRY, CheckResult, Lab, Report, select
from .grade import detect_lab, grade, stage_problem

T = TypeVar("T")
INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grader",
        description="Start a lab stage as a real uvicorn process, check it over HTTP, report points and feedback.",
        epilog=(
            "Exit status: 0 every check passed, 1 some failed, 2 the stage could not be graded. "
            "With GRADER_DATABASE_URL naming a PostgreSQL server (postgresql://postgres@127.0.0.1:5432/postgres), "
            "the advanced lab's database and checkpoint checks also run on a throwaway database made there."
        ),
    )
    parser.add_argument("path", type=Path, nargs="?", help="the stage folder (with app/main.py)")
    parser.add_argument("--lab", choices=["medium", "advanced"], help="the lab to grade for (default: detected)")
    parser.add_argument("--format", choices=reporters.FORMATS, default="text", help="the report's format")
    parser.add_argument("--output", type=Path, help="write the report to this file instead of stdout")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated check ids or topics ({', '.join(checks.TOPICS)}); prerequisites run too",
    )
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for /health (60)")
    parser.add_argument("--list", action="store_true", help="list the lab's checks and points, then exit")
    parser.add_argument(
        "--hidden",
        help=f"check ids or topics hidden from students until --hidden-until (default: ${visibility.ENV_HIDDEN})",
    )
    parser.add_argument(
        "--hidden-until",
        help=f"the day (YYYY-MM-DD) hidden checks are shown; default ${visibility.ENV_UNTIL}, else the due date",
    )
    return parser


def _say(message: str) -> None:
    print(f"grader: {message}", file=sys.stderr, flush=True)


def _show(result: CheckResult) -> None:
    print(reporters.progress(result), file=sys.stderr, flush=True)


def _stdout_is_stderr() -> bool:
    """Whether stdout goes where the progress went (one terminal, or nox's one pipe): the report is not repeated."""
    try:
        return os.path.sameopenfile(sys.stdout.fileno(), sys.stderr.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # a captured stream has no file descriptor
        return False


def sheet_order(stage: Path) -> list[int]:
    """The TODO numbers in the order the stage's lab sheet (its README.md's TODO table) lists them."""
    try:
        sheet = (stage / "README.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return list(dict.fromkeys(int(number) for number in re.findall(r"^\| *(\d+) *\|", sheet, re.MULTILINE)))


def _emit(report: Report, kind: str, output: Path | None, order: list[int]) -> None:
    """The report, to `output` or stdout, unless stdout is where each result was just shown (a text report would
    repeat it); then, on stderr after it, the line a student reads last (`reporters.next_step`)."""
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(reporters.render(report, kind), encoding="utf-8")
        _say(f"report written to {output}")
    else:
        if report.error or kind != "text" or not _stdout_is_stderr():
            sys.stdout.write(reporters.render(report, kind))
            sys.stdout.flush()
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a", encoding="utf-8") as file:
            file.write(reporters.markdown(report))
    print(reporters.next_step(report, order), file=sys.stderr, flush=True)


def _list(lab: Lab) -> int:
    selected = select(lab)
    for check in selected:
        print(f"{check.points:>2}  {check.id:<36} {check.title}")
    print(f"{sum(check.points for check in selected)} points in {len(selected)} checks ({lab} lab)")
    return 0


async def _interruptible(work: Coroutine[Any, Any, T]) -> T:
    """Run `work`; Ctrl+C or SIGTERM cancels it, so the stage is stopped on the way out.

    A cancellation can be lost inside a library (anyio's cancel scopes and asyncio.timeout can swallow one in
    Python 3.11), and the grading then goes on to its end, where it stops the stage as usual; the interrupt
    still decides the outcome.
    """
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows, or not the main thread
            loop.add_signal_handler(sig, interrupt)
    try:
        result = await task
    finally:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    if interrupted:
        raise asyncio.CancelledError
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        return _list(args.lab or "medium")
    if args.path is None:
        build_parser().error("name the stage folder to grade, for example: python -m grader solutions/medium")
    stage: Path = args.path.resolve()
    lab: Lab = args.lab or detect_lab(stage)
    if problem := stage_problem(stage):
        report = Report(str(args.path), lab, [], error=problem, log_tail="(the stage was not started)")
        if args.format != "text" or args.output:
            _emit(report, args.format, args.output, [])
        else:
            _say(f"cannot grade: {problem}")
        return 2
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := [n for n in only if n not in REGISTRY and n not in checks.TOPICS]:
        build_parser().error(f"--only names no check or topic: {', '.join(unknown)}")
    try:
        shown = visibility.from_environment(lab, args.hidden, args.hidden_until)
    except ValueError as error:
        build_parser().error(f"--hidden: {error}")
    selected = select(lab, only)
    _say(f"grading {args.path} as the {lab} lab: {len(selected)} checks, {sum(c.points for c in selected)} points")
    try:
        work = grade(stage, lab, selected, start_timeout=args.start_timeout, say=_say, show=_show)
        report = asyncio.run(_interruptible(work))
    except (KeyboardInterrupt, asyncio.CancelledError):
        _say("interrupted; the stage was stopped")
        return INTERRUPTED
    report.stage = str(args.path)
    for result in report.results:
        result.hidden = shown.is_hidden(result.check.id)
    report.hidden_until = shown.shown
    _emit(report, args.format, args.output, sheet_order(stage))
    return report.exit_code


def _note_status(status: int) -> None:
    """Write the exit status where GRADER_STATUS_FILE says: `nox -s grade` accepts 0, 1 and 2 from the grader,
    so that nox does not present a partial grade as a crash, and exits with the status read here."""
    if path := os.environ.get("GRADER_STATUS_FILE"):
        Path(path).write_text(f"{status}\n", encoding="utf-8")


if __name__ == "__main__":
    status = 2
    try:
        status = main()
    except SystemExit as exiting:  # argparse's usage errors
        status = exiting.code if isinstance(exiting.code, int) else 2
    finally:
        _note_status(status)
    sys.exit(status)
