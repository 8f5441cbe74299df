"""The score ladder: the starter with TODOs 1..k done, for every k in the lab sheet's order, each graded.

    python -m grader.progression --lab medium|advanced [--step N] [--jobs N] [--json FILE]

Step k is the solution with every TODO after the sheet's k-th in its starter form (`grader.starters.render`):
step 0 is the starter, the last step the solution. Each step is graded as a student's copy would be (`python -m
grader STAGE --format json`), and two properties are judged over the ladder:

- every step pays: doing the k-th TODO raises the score, through at least one check whose `look at` line names
  that TODO (a check that was skipped or failed at the step before, and passes or earns more now);
- no misleading pointer: at every step, each failed check's `look at` names at least one TODO still missing;
  a failure that names only TODOs already done, or none at all, would send the student to the wrong place.

The ladder and every breach are printed; exit 1 when a property fails, 2 when a step could not be graded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import checks, starters
from grader.core import Lab, select

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\|\s*(\d+)\s*\|")
# "TODO 5", "TODO 5 and 7", "TODO 5, 6 and 8", "TODO 13 to 15": the numbers up to the hint's first colon.
_TODO_RUN = re.compile(r"\bTODOs?\s+((?:\d+)(?:\s*(?:,|and|to|–)\s*\d+)*)")
assert checks.TOPICS  # importing the package registers every check


def named_todos(hint: str) -> frozenset[int]:
    """The TODO numbers a `look at` line names; "13 to 15" is a range."""
    numbers: set[int] = set()
    for run in _TODO_RUN.findall(hint):
        parts = re.split(r"\s*(,|and|to|–)\s*", run)
        values, separators = [int(p) for p in parts[0::2]], parts[1::2]
        numbers.update(values)
        for low, separator, high in zip(values, separators, values[1:], strict=False):
            if separator in ("to", "–"):
                numbers.update(range(low, high + 1))
    return frozenset(numbers)


def sheet_order(lab: starters.Lab) -> list[int]:
    """The TODO numbers in the order the student's lab sheet lists them (its TODO table), then any it omits."""
    sheet = (ROOT / lab.starter / "README.md").read_text().splitlines()
    listed = [int(match[1]) for line in sheet if (match := _ROW.match(line))]
    every = [todo.number for todo in starters.todos(ROOT / lab.solution)]
    ordered = [n for n in dict.fromkeys(listed) if n in every]
    return ordered + [n for n in every if n not in ordered]


@dataclass(frozen=True)
class Outcome:
    """One check at one step: its status, points and the TODOs its `look at` line names."""

    status: str
    points: float
    todos: frozenset[int]


@dataclass
class Step:
    """One rung: the TODOs done so far, and what grading that tree gave."""

    done: tuple[int, ...]
    score: float = 0.0
    max_score: int = 0
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    def added_since(self, before: Step) -> tuple[int, ...]:
        """The TODOs done here and not at `before` (one, or several when rungs are skipped)."""
        return self.done[len(before.done) :]


def read_report(document: Mapping[str, Any], done: tuple[int, ...]) -> Step:
    """A step from the grader's JSON report of it."""
    step = Step(done, float(document.get("score") or 0), int(document.get("max_score") or 0))
    step.error = str(document.get("error") or "")
    for item in document.get("checks") or []:
        step.outcomes[item["id"]] = Outcome(item["status"], float(item["points"]), named_todos(item.get("hint") or ""))
    return step


def static_hints(lab: Lab) -> dict[str, frozenset[int]]:
    """Each check's TODOs from its registered hint (a skipped check's report carries none)."""
    return {check.id: named_todos(check.hint_for(lab)) for check in select(lab)}


_NONE = Outcome("", 0.0, frozenset())


def paying_checks(step: Step, before: Step, hints: Mapping[str, frozenset[int]]) -> list[str]:
    """The checks that earn more at `step` than at `before` and whose `look at` names a TODO added since."""
    added = set(step.added_since(before))
    gained = [cid for cid, o in step.outcomes.items() if o.points > before.outcomes.get(cid, _NONE).points]
    return [cid for cid in gained if added & (hints.get(cid, frozenset()) | before.outcomes.get(cid, _NONE).todos)]


def misleading(step: Step, order: Sequence[int]) -> list[str]:
    """The failed checks at `step` whose `look at` names no TODO that is still missing there."""
    missing = set(order[len(step.done) :])
    return [cid for cid, o in step.outcomes.items() if o.status == "failed" and not o.todos & missing]


@dataclass(frozen=True)
class Verdict:
    """The two properties over a ladder, each keyed by a rung's count of TODOs done: the rungs that did not pay,
    the misleading pointers at each rung, and the rungs that could not be graded."""

    unpaid: tuple[int, ...]
    misleading: dict[int, list[str]]
    errors: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not (self.unpaid or self.misleading or self.errors)


def judge(ladder: Sequence[Step], order: Sequence[int], hints: Mapping[str, frozenset[int]]) -> Verdict:
    """Judge a ladder (steps in order, the first the starter) against both properties."""
    unpaid = tuple(
        len(step.done)
        for before, step in itertools.pairwise(ladder)
        if not (step.score > before.score and paying_checks(step, before, hints))
    )
    wrong = {len(step.done): found for step in ladder if (found := misleading(step, order))}
    errors = tuple(len(step.done) for step in ladder if step.error)
    return Verdict(unpaid, wrong, errors)


def grade_step(lab: starters.Lab, order: Sequence[int], k: int, workdir: Path) -> Step:
    """Write the tree with the first k TODOs done, grade it, and read the grade."""
    done = tuple(order[:k])
    stage = workdir / f"{lab.name}-{k:02d}"
    starters.write_tree(starters.render(ROOT / lab.solution, only=set(order[k:])), stage)
    report = workdir / f"{lab.name}-{k:02d}.json"
    command = [sys.executable, "-m", "grader", str(stage), "--lab", lab.name, "--format", "json"]
    command += ["--output", str(report)]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
    if not report.is_file():
        step = Step(done, error=result.stderr.strip()[-500:] or f"the grader exited {result.returncode}")
    else:
        step = read_report(json.loads(report.read_text()), done)
    step.seconds = time.monotonic() - started
    return step


def climb(lab: starters.Lab, ks: Iterable[int], *, jobs: int) -> list[Step]:
    """Grade the chosen steps, `jobs` at a time, printing each as it finishes; the ladder in order."""
    order = sheet_order(lab)
    with tempfile.TemporaryDirectory(prefix="progression-") as tmp, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {k: pool.submit(grade_step, lab, order, k, Path(tmp)) for k in ks}
        for k, future in futures.items():
            step = future.result()
            print(f"  graded {lab.name} with {k:>2} TODOs done: {_score(step)} ({step.seconds:.0f} s)", flush=True)
        return [futures[k].result() for k in futures]


def _score(step: Step) -> str:
    if step.error:
        return f"could not grade ({step.error.splitlines()[-1]})"
    return f"{step.score:g}/{step.max_score}"


def show(lab: starters.Lab, ladder: Sequence[Step], verdict: Verdict, hints: Mapping[str, frozenset[int]]) -> None:
    """Print the ladder, a rung a line, then every breach of either property."""
    print(f"\n{lab.name} lab: score with the sheet's TODOs done in order")
    for before, step in zip([None, *ladder], ladder, strict=False):
        added = () if before is None else step.added_since(before)
        label = f"+ TODO {', '.join(map(str, added))}" if added else "starter"
        paid = "" if before is None else ", ".join(paying_checks(step, before, hints)) or "(no check of its own)"
        print(f"  {len(step.done):>2} {label:<12} {_score(step):>12}  {paid}")
    print(f"ladder: {' '.join(f'{step.score:g}' for step in ladder)} of {ladder[-1].max_score if ladder else 0}")
    for k in verdict.unpaid:
        todos = ", ".join(str(step.done[-1]) for step in ladder if len(step.done) == k)
        print(f"  does not pay: with {k} TODOs done (last TODO {todos}) no check that names it earns more")
    for k, found in verdict.misleading.items():
        print(f"  misleading with {k} TODOs done: {', '.join(found)} name no TODO still missing")
    unpaid, wrong = len(verdict.unpaid), sum(len(found) for found in verdict.misleading.values())
    print(f"steps that pay: {len(ladder) - 1 - unpaid}/{len(ladder) - 1}; misleading pointers: {wrong}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when the ladder rises at every step with no misleading pointer, 1 otherwise, 2 not gradable."""
    parser = argparse.ArgumentParser(prog="python -m grader.progression", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", choices=[lab.name for lab in starters.LABS], required=True)
    parser.add_argument("--step", type=int, default=1, help="grade every N-th rung only (and the last); default 1")
    parser.add_argument("--jobs", type=int, default=1, help="grade this many rungs at once (default 1)")
    parser.add_argument("--json", type=Path, help="also write the ladder as JSON to this file")
    args = parser.parse_args(argv)
    lab = next(lab for lab in starters.LABS if lab.name == args.lab)
    order = sheet_order(lab)
    ks = sorted({*range(0, len(order) + 1, max(args.step, 1)), len(order)})
    print(f"{lab.name} lab: grading {len(ks)} rungs of {len(order)} TODOs in the sheet's order", flush=True)
    ladder = climb(lab, ks, jobs=max(args.jobs, 1))
    hints = static_hints(lab.name)  # type: ignore[arg-type]
    verdict = judge(ladder, order, hints)
    show(lab, ladder, verdict, hints)
    if args.json:
        rungs = [{"done": list(s.done), "score": s.score, "max_score": s.max_score, "error": s.error} for s in ladder]
        args.json.write_text(json.dumps({"lab": lab.name, "order": order, "rungs": rungs}, indent=2) + "\n")
    if verdict.errors:
        return 2
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
