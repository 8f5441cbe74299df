"""`nox -s bench_grading`: how long the grader takes over each solution, graded several times, as medians.

Each round grades every stage once, one after the other (side by side in one run, so that the machine's load
is shared alike), by the CLI (`python -m grader STAGE --format json`); the time is the grader's own "graded in"
(`duration_seconds`), and every grade must keep the stage's full marks. The load average is printed before
and after, since other work on the machine changes every figure. Goals (grader/README.md): the advanced
solution within 20 s, the medium one within 8 s; `--strict` exits 1 when a median misses its goal.
The fork server (grader/forkserver.py) is what makes them reachable: it is off while stages are contained
(GRADER_SANDBOX, on by default), so `GRADER_SANDBOX=0` measures it; both settings are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOALS = {"solutions/medium": 8.0, "solutions/advanced": 20.0}


def grade_once(stage: str) -> tuple[float, float, int]:
    """One grade of `stage`: (graded in, score, max score)."""
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as folder:
        output = Path(folder) / "grade.json"
        command = [sys.executable, "-m", "grader", str(ROOT / stage), "--format", "json", "--output", str(output)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=600, check=False)
        report = json.loads(output.read_text(encoding="utf-8"))
    return float(report["duration_seconds"]), float(report["score"]), int(report["max_score"])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s bench_grading --", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="grades of each stage (3)")
    parser.add_argument("--stage", action="append", choices=sorted(GOALS), help="only this stage (repeatable)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a median misses its goal")
    args = parser.parse_args(argv)
    stages = args.stage or list(GOALS)
    times: dict[str, list[float]] = {stage: [] for stage in stages}
    modes = {name: os.environ.get(name, "1") for name in ("GRADER_SANDBOX", "GRADER_FORK")}
    print(f"before: {load()}; {', '.join(f'{name}={value}' for name, value in modes.items())}", flush=True)
    for round_number in range(1, args.rounds + 1):
        for stage in stages:
            seconds, score, total = grade_once(stage)
            print(f"round {round_number}: {stage}: {score:g}/{total} graded in {seconds:.1f} s ({load()})", flush=True)
            if score != total:
                print(f"{stage} lost points: the benchmark's figures are not those of a full grade", file=sys.stderr)
                return 1
            times[stage].append(seconds)
    print(f"after: {load()}")
    missed = False
    for stage, measured in times.items():
        median = statistics.median(measured)
        verdict = "within" if median <= GOALS[stage] else "over"
        missed |= median > GOALS[stage]
        shown = ", ".join(f"{value:.1f}" for value in measured)
        print(f"{stage}: median {median:.1f} s ({shown}); {verdict} the goal of {GOALS[stage]:g} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
