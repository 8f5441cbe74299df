"""Grading the same stage again gives the same grade: `python -m grader.repeatability [--times N] [STAGE ...]`.

By default the stages are both solutions, the medium starter, and two partial medium trees (the starter with
the first third and the first two thirds of the sheet's TODOs done, rendered from the solution's markers):
full marks, none, and the middle, where a check that depends on timing would most likely waver. Each stage is
graded N times (10 by default), one grade at a time, and every grade must give the same score and the same
status for every check. A check the grader retried (its two tries disagreed) is counted as flaky, and reported,
though it keeps the grade stable. Exit 1 when a stage's grades differ, 2 when one could not be graded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import progression, starters

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMES = 10


@dataclass
class Grade:
    """One grade of a stage: its score, each check's status, the checks marked flaky, or why it failed."""

    score: float
    statuses: dict[str, str]
    flaky: list[str]
    error: str = ""


@dataclass
class Stage:
    """A stage and its grades."""

    name: str
    path: Path
    lab: str
    grades: list[Grade] = field(default_factory=list)

    def wavering(self) -> dict[str, Counter[str]]:
        """The checks whose status was not the same in every grade, with how often each status came."""
        seen: dict[str, Counter[str]] = {}
        for grade in self.grades:
            for check_id, status in grade.statuses.items():
                seen.setdefault(check_id, Counter())[status] += 1
        return {cid: c for cid, c in seen.items() if len(c) > 1 or sum(c.values()) != len(self.grades)}

    @property
    def stable(self) -> bool:
        return not self.errors and len({g.score for g in self.grades}) <= 1 and not self.wavering()

    @property
    def errors(self) -> list[str]:
        return [grade.error for grade in self.grades if grade.error]


def grade_once(stage: Stage, workdir: Path, index: int) -> Grade:
    """Grade the stage in a grader process of its own; the grade from its JSON report."""
    report = workdir / f"{stage.name}-{index}.json"
    command = [sys.executable, "-m", "grader", str(stage.path), "--lab", stage.lab, "--format", "json"]
    command += ["--output", str(report)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)  # noqa: S603
    if not report.is_file():
        return Grade(0.0, {}, [], result.stderr.strip()[-300:] or f"the grader exited {result.returncode}")
    document = json.loads(report.read_text())
    if document.get("error"):
        return Grade(0.0, {}, [], str(document["error"]))
    items = document["checks"]
    flaky = [item["id"] for item in items if item.get("flaky")]
    return Grade(float(document["score"]), {item["id"]: item["status"] for item in items}, flaky)


def default_stages(workdir: Path) -> list[Stage]:
    """Both solutions, the medium starter, and the medium starter a third and two thirds done."""
    medium = starters.LABS[0]
    order = progression.sheet_order(medium)
    stages = [Stage("medium-solution", ROOT / "solutions/medium", "medium")]
    stages.append(Stage("advanced-solution", ROOT / "solutions/advanced", "advanced"))
    stages.append(Stage("medium-starter", ROOT / medium.starter, "medium"))
    for share in (1, 2):
        done = len(order) * share // 3
        path = workdir / f"medium-{done}-done"
        starters.write_tree(starters.render(ROOT / medium.solution, only=set(order[done:])), path)
        stages.append(Stage(f"medium-{done}-of-{len(order)}-done", path, "medium"))
    return stages


def _detect(path: Path) -> str:
    return "advanced" if any((path / "app" / name).is_file() for name in ("auth.py", "cache.py")) else "medium"


def report(stages: Sequence[Stage]) -> None:
    """A line per stage: its scores, and every check that wavered or was marked flaky."""
    print("\nstage                        scores                          verdict")
    for stage in stages:
        scores = " ".join(f"{g.score:g}" if not g.error else "error" for g in stage.grades)
        verdict = "same every time" if stage.stable else "DIFFERS"
        print(f"  {stage.name:<26} {scores:<31} {verdict}")
        for check_id, counts in stage.wavering().items():
            print(f"      {check_id}: {', '.join(f'{status} {n}x' for status, n in counts.items())}")
        flaky = Counter(cid for grade in stage.grades for cid in grade.flaky)
        for check_id, n in sorted(flaky.items()):
            print(f"      {check_id}: retried after a failed first try in {n} of {len(stage.grades)} grades")
        for error in dict.fromkeys(stage.errors):
            print(f"      could not grade: {error}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.repeatability", description=__doc__.split("\n\n")[0])
    parser.add_argument("stages", nargs="*", type=Path, help="stage folders (default: see the module's help)")
    parser.add_argument("--times", type=int, default=DEFAULT_TIMES, help=f"grades per stage ({DEFAULT_TIMES})")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="repeatability-") as tmp:
        workdir = Path(tmp)
        stages = [Stage(p.name, p.resolve(), _detect(p)) for p in args.stages] or default_stages(workdir)
        print(f"grading {len(stages)} stages {args.times} times each, one grade at a time", flush=True)
        for stage in stages:
            for index in range(args.times):
                started = time.monotonic()
                grade = grade_once(stage, workdir, index)
                stage.grades.append(grade)
                shown = grade.error or f"{grade.score:g}"
                print(f"  {stage.name} #{index + 1}: {shown} ({time.monotonic() - started:.0f} s)", flush=True)
        report(stages)
    if any(stage.errors for stage in stages):
        return 2
    return 0 if all(stage.stable for stage in stages) else 1


if __name__ == "__main__":
    raise SystemExit(main())
