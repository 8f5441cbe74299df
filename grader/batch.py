"""Grade a class: `python -m grader.batch SUBMISSIONS --lab LAB [--jobs N] [--out DIR]`, a gradebook and a summary."""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from . import checks as _checks  # noqa: F401 - registers every check, for the lab's total
from . import regrade, reporters, similarity
from .core import Check, CheckResult, Lab, Report, Status, select

ROOT = Path(__file__).resolve().parent.parent
# Measured on the course's 2-core machine (see grader/README.md): two graders side by side keep every score,
# including the timed load checks, and take about 0.6 of the time one after the other does.
DEFAULT_JOBS = 2
DEFAULT_TIMEOUT = 180.0
STOP_GRACE_SECONDS = 15.0  # the grader itself gives its stage 10 s after SIGTERM
FEEDBACK_SUFFIX = {"text": ".txt", "json": ".json", "gradescope": ".results.json", "junit": ".xml"}
GRADEBOOK_COLUMNS = ("student", "score", "max", "status", "seconds", "failed_checks", "skipped_checks", "reason")
MOST_FAILED = 10
IGNORED = ("__MACOSX", "__pycache__")


@dataclass
class Submission:
    """One student's work: a folder, or a zip file unpacked before grading."""

    student: str
    path: Path


@dataclass
class Row:
    """One line of the gradebook, with the report its feedback file is written from."""

    student: str
    report: Report
    max_score: int
    seconds: float
    note: str = ""  # said in the reason column of a graded row

    @property
    def status(self) -> str:
        return "ungradable" if self.report.error else "graded"

    @property
    def score(self) -> float:
        return 0.0 if self.report.error else self.report.score

    @property
    def failed(self) -> list[str]:
        return [result.check.id for result in self.report.results if result.status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [result.check.id for result in self.report.results if result.status == "skipped"]

    @property
    def reason(self) -> str:
        """Why it is ungradable, with the last line of the stage's log (often the exception), or the note."""
        if not self.report.error:
            return self.note
        last = [line.strip() for line in self.report.log_tail.splitlines() if line.strip()]
        if last and not last[-1].startswith(("---", "(")):
            return f"{self.report.error}: {last[-1][:200]}"
        return self.report.error

    def cells(self) -> dict[str, str]:
        return {
            "student": self.student,
            "score": f"{self.score:g}",
            "max": str(self.max_score),
            "status": self.status,
            "seconds": f"{self.seconds:.1f}",
            "failed_checks": ";".join(self.failed),
            "skipped_checks": ";".join(self.skipped),
            "reason": self.reason,
        }


@dataclass
class Batch:
    """The processes the batch has started, so that an interrupt can stop every one of them."""

    stopping: threading.Event = field(default_factory=threading.Event)
    running: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.running[process.pid] = process

    def remove(self, process: subprocess.Popen[bytes]) -> None:
        with self.lock:
            self.running.pop(process.pid, None)

    def stop_all(self) -> None:
        """SIGTERM each grader's process group (it stops its stage), SIGKILL what is left after the grace."""
        self.stopping.set()
        with self.lock:
            processes = list(self.running.values())
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group we created for this grader (the grader and the stages it started)."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grader.batch",
        description="Grade every submission under a folder (one folder or zip file per student), N at a time.",
    )
    parser.add_argument("submissions", type=Path, help="a folder holding one folder or .zip per student")
    parser.add_argument("--lab", choices=["medium", "advanced"], required=True, help="the lab to grade for")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help=f"submissions graded at once ({DEFAULT_JOBS})")
    parser.add_argument("--out", type=Path, default=Path("build/grades"), help="where results go (build/grades)")
    parser.add_argument(
        "--format", choices=["text", "json", "gradescope", "junit"], default="text", help="feedback files' format"
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help=f"seconds per submission ({DEFAULT_TIMEOUT:g})"
    )
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds a stage has to answer (60)")
    parser.add_argument("--previous", type=Path, help="an earlier gradebook.csv: report each student's changes")
    parser.add_argument("--hidden", default="", help="check ids or topics hidden in the feedback until --hidden-until")
    parser.add_argument("--hidden-until", default="", help="the day (YYYY-MM-DD) hidden checks are shown")
    return parser


def discover(folder: Path) -> list[Submission]:
    """Every student's folder or zip file in `folder`, by name; hidden entries and other files are left out."""
    found: list[Submission] = []
    names: set[str] = set()
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name in IGNORED:
            continue
        if not (path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip")):
            continue
        student = path.stem if path.is_file() else path.name
        if student in names:  # alice/ and alice.zip
            student = path.name
        names.add(student)
        found.append(Submission(student, path))
    return found


def unpack(archive: Path, into: Path) -> Path:
    """Unpack a zip file safely (no absolute paths, no `..`, no links); its single top folder if it has one."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.infolist():
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if member.filename.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", member.filename):
                raise ValueError(f"the zip file holds an unsafe path: {member.filename!r}")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise ValueError(f"the zip file holds a symbolic link: {member.filename!r}")
        zipped.extractall(into)
    entries = [p for p in into.iterdir() if p.name not in IGNORED and not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def find_stage(folder: Path) -> Path:
    """The shallowest folder holding `app/main.py` (a student may submit the lab folder or its contents)."""
    for depth in range(4):
        pattern = "/".join(["*"] * depth + ["app", "main.py"])
        candidates = sorted(
            p.parent.parent
            for p in folder.glob(pattern)
            if not any(part.startswith(".") or part in IGNORED for part in p.relative_to(folder).parts)
        )
        if candidates:
            return candidates[0]
    return folder


def _requirements(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    lines = (line.split("#", 1)[0].strip().lower() for line in path.read_text(errors="replace").splitlines())
    return {line.replace(" ", "") for line in lines if line}


def pins_note(stage: Path, lab: Lab) -> str:
    """Said when the submission's requirements.txt differs from the lab's: it is graded with the course's pins."""
    theirs = _requirements(stage / "requirements.txt")
    if theirs and theirs != _requirements(ROOT / f"{lab}_lab" / "requirements.txt"):
        return "graded with the course's pins: its requirements.txt differs from the lab's"
    return ""


def report_from_json(document: dict[str, Any]) -> Report:
    """Rebuild the grader's Report from its JSON, so that any of its writers can render the feedback."""
    results = []
    for item in document.get("checks", []):
        check = Check(item["id"], item["title"], int(item["max_points"]), _never_called)
        status: Status = item["status"]
        result = CheckResult(check, status, float(item["points"]), item["expected"], item["observed"])
        feedback: str = item.get("feedback", "")
        if status == "skipped":
            result.reason = feedback.removeprefix("skipped: ")
        for line in feedback.splitlines():
            if line.startswith("likely cause: "):
                result.cause = line.removeprefix("likely cause: ")
        result.hint, result.duration = item.get("hint", ""), float(item.get("duration_seconds", 0.0))
        result.flaky, result.first_try = bool(item.get("flaky", False)), str(item.get("first_try", ""))
        result.hidden = item.get("visibility", "visible") != "visible"
        results.append(result)
    report = Report(document["stage"], document["lab"], results, error=document.get("error", ""))
    report.duration, report.log_tail = float(document.get("duration_seconds", 0.0)), document.get("log_tail", "")
    report.hidden_until = str(document.get("hidden_until") or "")
    return report


async def _never_called(ctx: Any) -> None:  # a rebuilt check is only rendered, never run
    raise NotImplementedError


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").rstrip() if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(the grader wrote nothing)"


@contextmanager
def prepared(submission: Submission) -> Iterator[Path]:
    """The stage folder to grade: the submission's own, or found in its unpacked zip (removed afterwards)."""
    if submission.path.is_dir():
        yield find_stage(submission.path)
        return
    with tempfile.TemporaryDirectory(prefix="grader-zip-") as temp:
        yield find_stage(unpack(submission.path, Path(temp)))


def grade_one(submission: Submission, lab: Lab, out: Path, args: argparse.Namespace, batch: Batch) -> Row:
    """Grade one submission in its own grader process (and process group), within the time limit."""
    started = time.monotonic()
    total = sum(check.points for check in select(lab))
    raw, log = out / "raw" / f"{submission.student}.json", out / "logs" / f"{submission.student}.log"
    raw.unlink(missing_ok=True)
    try:
        with ExitStack() as stack:
            stage = stack.enter_context(prepared(submission))
            command = [sys.executable, "-m", "grader", str(stage), "--lab", lab, "--format", "json"]
            command += ["--output", str(raw), "--start-timeout", f"{args.start_timeout:g}"]
            if args.hidden:
                command += ["--hidden", args.hidden, "--hidden-until", args.hidden_until]
            outcome = _run(command, log, args.timeout, batch)
            note = pins_note(stage, lab)
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        outcome, note = f"the submission could not be unpacked: {error}", ""
    seconds = time.monotonic() - started
    if isinstance(outcome, str):
        return Row(
            submission.student, Report(submission.student, lab, [], error=outcome, log_tail=_tail(log)), total, seconds
        )
    try:
        report = report_from_json(json.loads(raw.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as error:
        reason = f"the grader exited with {outcome} without a readable report ({type(error).__name__})"
        report = Report(submission.student, lab, [], error=reason, log_tail=_tail(log))
    else:
        if outcome not in (0, 1, 2) and not report.error:
            report.error = f"the grader exited with {outcome}"
    report.stage = submission.student
    return Row(submission.student, report, total, seconds, note)


def _run(command: list[str], log: Path, limit: float, batch: Batch) -> int | str:
    """The grader's exit status, or why it has none (timed out, interrupted)."""
    if batch.stopping.is_set():
        return "not graded: the batch was interrupted"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GITHUB_STEP_SUMMARY", None)  # one summary per batch, not one per student
    with open(log, "wb") as output:
        # Our own interpreter running the grader; its own session, so that its stages can be stopped with it.
        process = subprocess.Popen(  # noqa: S603
            command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    batch.add(process)
    deadline = time.monotonic() + limit
    try:
        while True:
            try:
                return process.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if batch.stopping.is_set():
                return "not graded: the batch was interrupted"
            if time.monotonic() > deadline:
                _signal_group(process, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=STOP_GRACE_SECONDS)
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=STOP_GRACE_SECONDS)
                return f"timed out: not graded within {limit:g} s (the stage hangs at start-up, or a check hangs)"
    finally:
        if process.poll() is None:
            _signal_group(process, signal.SIGKILL)
        batch.remove(process)


def write_outputs(rows: list[Row], out: Path, kind: str) -> None:
    """gradebook.csv, a feedback file per student, summary.txt and summary.png."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "gradebook.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=GRADEBOOK_COLUMNS)
        writer.writeheader()
        writer.writerows(row.cells() for row in rows)
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    for row in rows:
        (feedback / f"{row.student}{FEEDBACK_SUFFIX[kind]}").write_text(reporters.render(row.report, kind), "utf-8")
    (out / "summary.txt").write_text(summary(rows), encoding="utf-8")
    chart(rows, out / "summary.png")


def most_failed(rows: list[Row], count: int = MOST_FAILED) -> list[tuple[str, int]]:
    """The checks failed by the most graded submissions, most first (ties by id, so the order is stable)."""
    counter = Counter(check for row in rows for check in row.failed)
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:count]


def summary(rows: list[Row]) -> str:
    """The class at a glance: statuses, the score distribution with a text histogram, the most failed checks."""
    if not rows:
        return "No submissions found.\n"
    total = rows[0].max_score
    scores = [row.score for row in rows]
    graded = [row for row in rows if row.status == "graded"]
    lines = [
        f"{len(rows)} submissions: {len(graded)} graded, {len(rows) - len(graded)} ungradable (scored 0)",
        f"score out of {total}: min {min(scores):g}, median {statistics.median(scores):g}, max {max(scores):g}",
        "",
        "distribution:",
    ]
    for low, high, count in histogram(scores, total):
        lines.append(f"  {low:>5.0f}-{high:<5.0f} {'#' * count} {count}")
    failed = most_failed(graded)
    lines += ["", f"most failed checks (of {len(graded)} graded):"]
    lines += [f"  {count:>3}  {check}" for check, count in failed] or ["  (none)"]
    for row in rows:
        if row.status == "ungradable":
            lines.append(f"ungradable: {row.student}: {row.reason}")
    return "\n".join(lines) + "\n"


def histogram(scores: list[float], total: int, bins: int = 10) -> list[tuple[float, float, int]]:
    """Counts of scores in `bins` equal ranges of 0..total (the last range includes the full mark)."""
    width = max(total, 1) / bins
    counts = [0] * bins
    for score in scores:
        counts[min(int(score / width), bins - 1)] += 1
    return [(i * width, (i + 1) * width, counts[i]) for i in range(bins)]


def chart(rows: list[Row], path: Path) -> None:
    """summary.png: the score histogram and the most failed checks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 3]})
    total = rows[0].max_score if rows else 1
    bars = histogram([row.score for row in rows], total)
    left.bar([low for low, _, _ in bars], [n for _, _, n in bars], width=total / 10, align="edge", edgecolor="black")
    left.set(title=f"Scores ({len(rows)} submissions)", xlabel=f"points out of {total}", ylabel="submissions")
    left.set_xlim(0, total)
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    failed = most_failed([row for row in rows if row.status == "graded"])
    right.barh([check for check, _ in failed][::-1], [n for _, n in failed][::-1], color="tab:red")
    right.set(title="Most failed checks", xlabel="submissions failing it")
    if not failed:
        right.text(0.5, 0.5, "no failed check", ha="center", va="center", transform=right.transAxes)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def progress(done: int, total: int, elapsed: float) -> str:
    """`[n/N] elapsed 1:05, ETA 2:10`: the time left at the pace so far (jobs side by side included)."""
    left = elapsed / done * (total - done) if done else 0.0
    return f"[{done}/{total}] elapsed {_clock(elapsed)}, ETA {_clock(left)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}:{rest:02d}"


def grade_all(args: argparse.Namespace) -> list[Row]:
    """Grade every submission, `args.jobs` at a time; an interrupt stops every grader (and stage) started."""
    submissions = discover(args.submissions)
    batch = Batch()
    rows: dict[str, Row] = {}
    print(f"grading {len(submissions)} submissions as the {args.lab} lab, {args.jobs} at a time", file=sys.stderr)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(grade_one, s, args.lab, args.out, args, batch): s for s in submissions}
        try:
            for future in as_completed(futures):
                row = future.result()
                rows[row.student] = row
                done = progress(len(rows), len(submissions), time.monotonic() - started)
                print(f"  {done}  {row.student}: {row.cells()['score']}/{row.max_score} {row.status}", file=sys.stderr)
        except BaseException:
            batch.stop_all()
            raise
    return [rows[s.student] for s in submissions]


def _check_ids(lab: Lab) -> list[str]:
    return [check.id for check in select(lab)]


def _statuses(row: Row, lab: Lab) -> dict[str, str]:
    return regrade.statuses(_check_ids(lab), ";".join(row.failed), ";".join(row.skipped), not row.report.error)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.submissions.is_dir():
        build_parser().error(f"no such folder: {args.submissions}")
    if args.previous and not args.previous.is_file():
        build_parser().error(f"no such gradebook: {args.previous}")
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the batch like Ctrl+C
    try:
        rows = grade_all(args)
    except KeyboardInterrupt:
        print("interrupted: every grader and stage the batch started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    before = regrade.read_gradebook(args.previous, _check_ids(args.lab)) if args.previous else None
    write_outputs(rows, args.out, args.format)
    shutil.rmtree(args.out / "raw", ignore_errors=True)
    pairs = similarity.class_report(args.submissions, args.lab, args.out)
    print(summary(rows), end="")
    print(
        f"gradebook: {args.out / 'gradebook.csv'}; feedback: {args.out / 'feedback'}; chart: {args.out / 'summary.png'}"
    )
    print(f"similarity: {len(pairs)} pair(s) to look at in {args.out / 'similarity.md'}")
    if before is not None:
        after = {row.student: regrade.Entry(row.score, _statuses(row, args.lab)) for row in rows}
        changes = regrade.compare(before[0], after)
        print(regrade.summary(changes, before[1]), end="")
        print(f"changes: {regrade.write(changes, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
