"""Proof that every TODO is graded: take it out of the solution alone, grade the result, list what fails.

    python -m grader.sensitivity [--lab medium|advanced] [--full] [--todo N ...]

For each TODO of a lab, the solution with only that TODO in its starter form (see `grader.starters`) is
written to a temporary stage and graded as a student's copy would be (`python -m grader STAGE --format
json`). By default each run is limited to the check topics that the lab sheet's "checked by" column names
for that TODO (their prerequisites run too), so the run proves the lab sheet's own claims and stays quick;
`--full` runs every check, for the whole matrix. The matrix (TODO x failed checks) is printed, then the
coverage (`TODOs graded: 30/30`). Exit 1 when a TODO fails no check, or when the lab sheet names no topic
for it.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import starters

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ("api", "streaming", "sessions", "errors", "load", "rate_limit", "auth", "caching", "metrics", "logging",
          "database", "load_test", "deploy", "config", "tracing")  # fmt: skip
_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*$")


@dataclass(frozen=True)
class Outcome:
    """What grading the solution without one TODO gave."""

    todo: starters.Todo
    topics: tuple[str, ...]
    failed: tuple[str, ...]
    exit_code: int
    seconds: float
    error: str = ""


def claimed_topics(lab_sheet: Path) -> dict[int, tuple[str, ...]]:
    """The check topics the lab sheet's TODO table names for each TODO, from its last column."""
    claims: dict[int, tuple[str, ...]] = {}
    for line in lab_sheet.read_text().splitlines():
        match = _ROW.match(line.strip())
        if match is None:
            continue
        checked_by = match.group(2).rsplit("|", 1)[-1]
        found: list[str] = []
        for clause in checked_by.split(";"):
            prefix = clause.split(":", 1)[0] if ":" in clause else ""
            found += [topic for topic in TOPICS if re.search(rf"\b{topic}\b", prefix)]
        claims[int(match.group(1))] = tuple(dict.fromkeys(found))
    return claims


def grade_without(lab: starters.Lab, todo: starters.Todo, topics: Sequence[str] | None, workdir: Path) -> Outcome:
    """Write the solution with `todo` alone in starter form and grade it; the ids of the checks that failed."""
    stage = workdir / f"{lab.name}-todo-{todo.number}"
    starters.write_tree(starters.render(ROOT / lab.solution, only={todo.number}), stage)
    report = workdir / f"{lab.name}-todo-{todo.number}.json"
    command = [sys.executable, "-m", "grader", str(stage), "--lab", lab.name, "--format", "json"]
    command += ["--output", str(report)] + (["--only", ",".join(topics)] if topics else [])
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)  # noqa: S603
    seconds = time.monotonic() - started
    if not report.is_file():
        return Outcome(todo, tuple(topics or ()), (), result.returncode, seconds, result.stderr.strip()[-500:])
    data = json.loads(report.read_text())
    failed = tuple(check["id"] for check in data["checks"] if check["status"] == "failed")
    return Outcome(todo, tuple(topics or ()), failed, result.returncode, seconds, str(data.get("error") or ""))


def run(lab: starters.Lab, *, full: bool, only: set[int] | None) -> list[Outcome]:
    """Grade the solution once per TODO, each time with that TODO alone taken out."""
    claims = claimed_topics(ROOT / lab.starter / "README.md")
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
        for todo in starters.todos(ROOT / lab.solution):
            if only and todo.number not in only:
                continue
            topics = None if full else claims.get(todo.number, ())
            if topics == ():
                outcome = Outcome(todo, (), (), 0, 0.0, "the lab sheet names no check topic for this TODO")
            else:
                outcome = grade_without(lab, todo, topics, Path(tmp))
            outcomes.append(outcome)
            _progress(outcome)
    return outcomes


def _progress(outcome: Outcome) -> None:
    verdict = f"{len(outcome.failed)} failed" if outcome.failed else "NOT GRADED"
    if outcome.exit_code == 2:
        verdict = "could not be graded (the stage did not start)"
    print(f"  TODO {outcome.todo.number:>2}: {verdict:<14} {outcome.seconds:5.1f}s  {outcome.todo.title}", flush=True)


def report(lab: starters.Lab, outcomes: Sequence[Outcome]) -> bool:
    """Print the matrix and the coverage line; True when every TODO failed at least one check."""
    print(f"\n{lab.name} lab: TODO x checks that fail without it")
    for outcome in outcomes:
        shown = ", ".join(outcome.failed) or outcome.error or "(none)"
        print(f"  TODO {outcome.todo.number:>2} [{', '.join(outcome.topics) or 'all'}]: {shown}")
    graded = [o for o in outcomes if o.failed and o.exit_code != 2]
    print(f"TODOs graded: {len(graded)}/{len(outcomes)}")
    return len(graded) == len(outcomes)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every TODO of the chosen labs is graded, 1 otherwise."""
    parser = argparse.ArgumentParser(prog="python -m grader.sensitivity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", choices=[lab.name for lab in starters.LABS], action="append")
    parser.add_argument("--full", action="store_true", help="run every check, not only the lab sheet's topics")
    parser.add_argument("--todo", type=int, action="append", help="only this TODO (repeatable)")
    args = parser.parse_args(argv)
    labs = [lab for lab in starters.LABS if lab.name in (args.lab or starters.DEFAULT_LABS)]
    ok = True
    for lab in labs:
        print(f"{lab.name} lab: grading the solution without each TODO in turn", flush=True)
        ok = report(lab, run(lab, full=args.full, only=set(args.todo or ()) or None)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
