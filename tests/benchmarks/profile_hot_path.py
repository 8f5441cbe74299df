"""Profile the cached hot path with py-spy while wrk sends the cached query: where one worker's time goes."""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import servers
from tests.benchmarks.bench import CACHED_QUERY, ask_cached
from tests.benchmarks.loadgen import Target, wrk_script
from tests.support.services import redis_server
from tests.support.stage import ROOT

# Where a sample's time goes, by the first of these found in its stack (outermost layer last, so the
# innermost named layer wins): file-path fragments of py-spy's frames, and the name printed for them.
LAYERS: tuple[tuple[str, str], ...] = (
    ("sqlite3", "SQLite (sqlite3, in aiosqlite's thread)"),
    ("aiosqlite", "aiosqlite (the thread hop to SQLite)"),
    ("sqlalchemy", "SQLAlchemy (sessions, queries, commits)"),
    ("langgraph", "LangGraph (checkpoint read/write: aget_state, aupdate_state)"),
    ("langchain_core", "LangChain core (messages, runnables)"),
    ("structlog", "structlog (JSON access and app logs)"),
    ("logging/", "logging (stdlib)"),
    ("prometheus_client", "prometheus_client (metrics)"),
    ("redis/", "redis-py (cache GET, rate-limit script, session lock)"),
    ("jose", "python-jose (JWT)"),
    ("pydantic", "pydantic (validation, serialisation)"),
    ("fastapi", "FastAPI (routing, dependencies, encoding)"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn / httptools (HTTP)"),
    ("app/", "the solution's own code (app/)"),
    ("asyncio", "asyncio event loop"),
)

USAGE = """\
python tests/benchmarks/profile_hot_path.py [--seconds 10] [--output build/profile/cached]

py-spy is a measuring tool, not a dependency: install it for the run (`pip install py-spy`). The collapsed
stacks are kept in OUTPUT.txt (speedscope and flamegraph.pl read them); the summary is printed.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="seconds of sampling under load (default 10)")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "profile" / "cached")
    parser.add_argument("--connections", type=int, default=16)
    return parser.parse_args(argv)


def py_spy() -> str:
    """The py-spy executable: next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("py-spy is not installed: pip install py-spy (a measuring tool, not a pinned dependency)")
    return found


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw format: one `frame;frame;...;leaf count` line per distinct stack."""
    stacks = []
    for line in path.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def layer_of(frames: Iterable[str]) -> str:
    """The innermost named layer of a stack, or `other`."""
    for frame in reversed(list(frames)):
        for fragment, name in LAYERS:
            if fragment in frame:
                return name
    return "other"


def _thread(root: str) -> str:
    """`thread (123): Thread-4 (_connection_worker_thread)` -> `Thread (_connection_worker_thread)`."""
    return re.sub(r"[-_]\d+\b", "", re.sub(r"^thread \(\d+\): ", "", root))


def _table(title: str, counts: collections.Counter[str], total: int, top: int) -> list[str]:
    rows = [f"| {name} | {count / total:.1%} |" for name, count in counts.most_common(top)]
    return ["", f"| {title} | share |", "| --- | ---: |", *rows]


def summary(stacks: list[tuple[list[str], int]], top: int = 12) -> str:
    """Shares by thread, by layer (the innermost named layer of each sample), by the solution's functions on
    the stack (inclusive), by SQLAlchemy entry point and by leaf function (own time).

    SQLAlchemy's asyncio layer runs its work in greenlets, whose stacks start at the SQLAlchemy call: the
    request's frames are not above them, so the solution's inclusive shares leave that work out.
    """
    total = sum(count for _, count in stacks)
    threads: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    solution: collections.Counter[str] = collections.Counter()
    greenlets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        threads[_thread(frames[0])] += count
        layers[layer_of(frames[1:])] += count
        if len(frames) > 1 and "sqlalchemy/" in frames[1]:
            greenlets[f"`{frames[1]}`"] += count
        for frame in set(frames[1:]):
            if "(app/" in frame:
                solution[f"`{frame}`"] += count
        leaves[f"`{frames[-1]}`" if len(frames) > 1 else "(no Python frame: C code, e.g. uvloop)"] += count
    lines = [f"{total} samples holding the GIL (the one worker's Python work; waits left out)"]
    lines += _table("thread", threads, total, top)
    lines += _table("innermost layer of each sample", layers, total, top)
    lines += _table(f"top {top} functions of the solution, inclusive", solution, total, top)
    lines += _table("SQLAlchemy's greenlets (their stacks start here), by entry point", greenlets, total, top)
    lines += _table(f"top {top} functions, own time", leaves, total, top)
    return "\n".join(lines)


def record(url: str, pid: int, args: argparse.Namespace, raw: Path, folder: Path) -> str:
    """Prime the cache, drive the cached query with wrk and sample the server meanwhile; wrk's output."""
    spy, wrk = py_spy(), shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    token = servers.login(url)
    ask_cached(url, token)
    if ask_cached(url, token).headers.get("X-Cache") != "HIT":
        raise SystemExit("the cached query is not a cache HIT: nothing to profile")
    target = Target("solution", f"{url}/api/v1/query", f'{{"query": "{CACHED_QUERY}"}}')
    target.headers["Authorization"] = f"Bearer {token}"
    script = folder / "post.lua"
    script.write_text(wrk_script(target))
    load_seconds = args.seconds + 3  # wrk starts first and outlasts the sampling
    command = [wrk, "-t1", f"-c{args.connections}", f"-d{load_seconds}s", "-s", str(script), target.url]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        # --gil: only samples holding the GIL, i.e. the worker's Python work; threads' waits drop out.
        command = [spy, "record", "--pid", str(pid), "--duration", str(args.seconds), "--gil", "--threads"]
        command += ["--nolineno", "--format", "raw", "--output", str(raw)]
        subprocess.run(command, check=True, timeout=args.seconds + 30, capture_output=True)
        output, _ = load.communicate(timeout=load_seconds + 30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(timeout=10)
    return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    raw = args.output.with_suffix(".txt")
    print(f"machine: {servers.machine()}")
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-")))
        stage = stack.enter_context(servers.solution(servers.solution_env(redis.url, folder / "profile.db")))
        output = record(stage.url, stage.process.pid, args, raw, folder)
    rate = next((line for line in output.splitlines() if line.startswith("Requests/sec")), "?")
    print(f"wrk during the profile (py-spy pauses the process 100 times a second): {rate.strip()}")
    print(f"collapsed stacks: {raw} (speedscope and flamegraph.pl read them)\n")
    print(summary(read_stacks(raw)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
