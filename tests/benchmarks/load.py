"""`nox -s load`: start the advanced solution, run its locustfile headless against its budgets, keep the CSVs."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import servers
from tests.benchmarks.plot_load import plot
from tests.support.services import redis_server
from tests.support.stage import ROOT

LOCUSTFILE = servers.SOLUTION / "locustfile.py"
GENEROUS_RATE_LIMIT = 1_000_000  # simulated users must measure the service, not the limiter's refusals

USAGE = """\
python tests/benchmarks/load.py [--users 20] [--spawn-rate 5] [--seconds 20] [--csv build/load/advanced]

The exit status is Locust's, and the locustfile's budgets decide it: 1 when the error rate passes
LOAD_MAX_ERROR_RATE or the p95 passes LOAD_MAX_P95_MS (see the locustfile's docstring), else 0.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20, help="simulated users (default 20)")
    parser.add_argument("--spawn-rate", type=float, default=5, help="users started per second (default 5)")
    parser.add_argument("--seconds", type=int, default=20, help="run time (default 20)")
    parser.add_argument("--csv", type=Path, default=ROOT / "build" / "load" / "advanced", help="CSV prefix")
    parser.add_argument("--plot", type=Path, default=ROOT / "build" / "load" / "load.png", help="the plot's file")
    return parser.parse_args(argv)


def locust_command(args: argparse.Namespace, url: str) -> list[str]:
    """Locust headless against url; its budgets, not any single failed request, set the exit code."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(args.users),
        "--spawn-rate",
        str(args.spawn_rate),
        "--run-time",
        f"{args.seconds}s",
        "--host",
        url,
        "--csv",
        str(args.csv),
        "--csv-full-history",  # per endpoint, and percentiles over the last 10 s rather than since the start
        "--only-summary",
        "--exit-code-on-error",
        "0",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Locust runs in the solution's folder: paths given relative to here must not move with it.
    args.csv, args.plot = args.csv.resolve(), args.plot.resolve()
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    print(f"machine: {servers.machine()}")
    print(
        f"caveat: Locust, redis-server and the service share these {os.cpu_count()} cores with whatever else runs here"
    )
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="load-")))
        if shutil.which("redis-server"):
            redis_url = stack.enter_context(redis_server()).url
            print(f"Redis: a throwaway redis-server at {redis_url}")
        else:
            redis_url = "memory://"
            print("Redis: embedded fakeredis (redis-server is not installed)")
        # The model's default delays (a realistic latency); a rate limit that never refuses a simulated user.
        env = servers.solution_env(
            redis_url,
            folder / "load.db",
            first_token_delay_ms=None,
            token_delay_ms=None,
            rate_limit=GENEROUS_RATE_LIMIT,
        )
        stage = stack.enter_context(servers.solution(env))
        budgets = {key: os.environ.get(key, "default") for key in ("LOAD_MAX_ERROR_RATE", "LOAD_MAX_P95_MS")}
        print(
            f"solution at {stage.url}; {args.users} users, {args.spawn_rate:g}/s, {args.seconds} s; budgets {budgets}"
        )
        command = locust_command(args, stage.url)
        done = subprocess.run(command, cwd=servers.SOLUTION, timeout=args.seconds + 120, check=False)
    # Locust's own tables above are the final numbers; its `_stats.csv` is a snapshot taken each second.
    print(f"\nCSV files: {args.csv}_*.csv; Locust's exit code: {done.returncode}")
    history = Path(f"{args.csv}_stats_history.csv")
    if history.is_file():
        title = f"Locust, {args.users} users for {args.seconds} s, against the advanced solution (one worker)"
        budget_ms = float(os.environ.get("LOAD_MAX_P95_MS", "2000"))  # the locustfile's default budget
        plot(history, args.plot, budget_ms=budget_ms, title=title)
        print(f"plot: {args.plot}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
