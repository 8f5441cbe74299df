"""Instructions per cached answer, in-process, counted by callgrind: a measure this noisy machine cannot move.

Timing a change of a few percent is hopeless on a shared two-core machine (the same tree measured 0.46 to 0.76
ms of CPU per cached answer on one day). Callgrind counts the instructions the worker runs instead, and that
count repeats to within about 1 % whatever else the machine does. The app runs in this process, driven through
ASGI by 8 concurrent callers (no HTTP server, no load generator), against a throwaway redis-server. Only the
measured requests are counted: instrumentation is switched on and off around them by a tiny C helper built
with the machine's compiler and valgrind's headers (Debian: gcc, valgrind).

The write-behind loop is paused during the count: its work follows the wall clock, which valgrind stretches
about fifty-fold. `bench.py` reports what the write-behind costs.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import servers
from tests.benchmarks.bench import CACHED_QUERY
from tests.support.services import redis_server
from tests.support.stage import ROOT

HELPER = """#include <valgrind/callgrind.h>
void count_on(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void count_off(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; CALLGRIND_STOP_INSTRUMENTATION; }
"""
CALLERS = 8
SUMMARY = "count: "  # the inner run's own line, among the app's log lines
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=servers.SOLUTION, help="the advanced solution's folder")
    parser.add_argument("--requests", type=int, default=800, help="cached answers counted (default 800)")
    parser.add_argument("--warmup", type=int, default=300, help="answers before counting (default 300)")
    parser.add_argument("--inner", help=argparse.SUPPRESS)  # the helper library: run as callgrind's target
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.inner:
        asyncio.run(drive(args.tree.resolve(), args.requests, args.warmup, ctypes.CDLL(args.inner)))
        return
    for tool in ("valgrind", "gcc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install {tool})")
    with tempfile.TemporaryDirectory(prefix="count-") as folder:
        helper = Path(folder) / "libcount.so"
        source = Path(folder) / "count.c"
        source.write_text(HELPER)
        built = subprocess.run(
            ["gcc", "-O2", "-shared", "-fPIC", "-o", str(helper), str(source)], capture_output=True, text=True
        )
        if built.returncode:
            raise SystemExit(f"could not build the helper (valgrind's headers missing?):\n{built.stderr}")
        out = Path(folder) / "callgrind.out"
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no"]
        command += [f"--callgrind-out-file={out}", sys.executable, __file__, "--inner", str(helper)]
        command += ["--tree", str(args.tree), "--requests", str(args.requests), "--warmup", str(args.warmup)]
        print(f"counting {args.requests} cached answers of {args.tree} under callgrind (about a minute)", flush=True)
        ran = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        dumps = sorted(Path(folder).glob("callgrind.out.*"))
        if ran.returncode or not dumps:
            raise SystemExit(f"the counted run failed:\n{ran.stdout[-3000:]}\n{ran.stderr[-3000:]}")
        match = _TOTALS.search(dumps[-1].read_text(errors="replace"))
        if match is None:
            raise SystemExit(f"no totals in {dumps[-1].name}")
        total = int(match[1])
        print(*(line.removeprefix(SUMMARY) for line in ran.stdout.splitlines() if line.startswith(SUMMARY)))
        print(f"instructions: {total:,} for {args.requests} cached answers = {total / args.requests:,.0f} per answer")


async def drive(tree: Path, requests: int, warmup: int, counter: ctypes.CDLL) -> None:
    """Start the app in this process, prime the cache, then count `requests` cached answers."""
    with redis_server() as redis, tempfile.TemporaryDirectory(prefix="count-db-") as folder:
        os.environ.update(servers.solution_env(redis.url, Path(folder) / "count.db"))
        sys.path.insert(0, str(tree))  # the tree's own `app` package
        pending_turns: Any = importlib.import_module("app.pending_turns")

        async def paused(pending: Any, fold: Any, idle: Any, stop: asyncio.Event, **_: Any) -> None:
            await stop.wait()

        pending_turns.write_behind = paused
        app = importlib.import_module("app.main").app

        async with app.router.lifespan_context(app):
            login = await _call(
                app, "/api/v1/auth/login", b"username=demo&password=demo-password", "application/x-www-form-urlencoded"
            )
            token = json.loads(login["body"])["access_token"]
            body = json.dumps({"query": CACHED_QUERY}).encode()
            answers = [await _call(app, "/api/v1/query", body, token=token) for _ in range(2)]
            if answers[-1]["headers"].get(b"x-cache") != b"HIT":
                raise RuntimeError(f"the second answer was not a cache HIT: {answers[-1]}")

            async def callers(total: int) -> None:
                async def caller(count: int) -> None:
                    for _ in range(count):
                        answer = await _call(app, "/api/v1/query", body, token=token)
                        if answer["status"] != 200:
                            raise RuntimeError(f"a cached answer failed: {answer}")

                await asyncio.gather(*(caller(total // CALLERS) for _ in range(CALLERS)))

            await callers(warmup)
            counter.count_on()
            await callers(requests)
            counter.count_off()
    print(f"{SUMMARY}{requests} cached answers from {CALLERS} concurrent callers, after {warmup} of warm-up")


async def _call(
    app: Any, path: str, body: bytes, content_type: str = "application/json", token: str | None = None
) -> dict[str, Any]:
    """One POST through the app's ASGI interface, as uvicorn would make it."""
    headers = [(b"host", b"bench"), (b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    answer: dict[str, Any] = {"body": b""}
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], dict(message["headers"])
        else:
            answer["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return answer


if __name__ == "__main__":
    main()
