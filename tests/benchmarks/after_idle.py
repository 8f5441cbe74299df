"""The same work, run back to back and after the worker has been idle: what waking up costs on this machine.

The first token's overhead grows from a few milliseconds with a zero-delay model to about twice that with a
200 ms one, though the service does the same work in both (results page, sections 8, 10 and 13), and a bare
endpoint that waits twice is no slower than one that waits once (section 13). What is left is the work itself
running slower after a wait. This times one piece of that work, the course graph from `astream()` to the
writer's first token (in this process, on the offline model with no delay, as `graph_steps.py` does), in
pairs: once right after the previous run, and once after the event loop has slept `--idle-ms`, alternated.
It runs on uvloop, as the service's workers do.
"""

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks.graph_steps import course_graph, first_token_ms, run_like_a_worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100, help="timed pairs of runs (default 100)")
    parser.add_argument("--warmup", type=int, default=30, help="untimed runs first (default 30)")
    parser.add_argument("--idle-ms", type=float, default=200, help="the pause before each second run (default 200)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    medians = run_like_a_worker(compare(args.pairs, args.warmup, args.idle_ms / 1000))
    busy, idle = medians["back to back"], medians["after idle"]
    print(f"the course graph from astream() to the writer's first token, median of {args.pairs} pairs, alternated:")
    print(f"  {'right after the previous run:':<32} {busy:.3f} ms")
    print(f"  {f'after {args.idle_ms:g} ms idle:':<32} {idle:.3f} ms")
    print(f"  waking up adds {idle - busy:.3f} ms ({(idle - busy) / busy:.0%}) to the same work")
    return medians


async def compare(pairs: int, warmup: int, idle_seconds: float) -> dict[str, float]:
    graph = course_graph()
    for index in range(warmup):
        await first_token_ms(graph, f"warm-{index}")
    times: dict[str, list[float]] = {"back to back": [], "after idle": []}
    for index in range(pairs):
        times["back to back"].append(await first_token_ms(graph, f"busy-{index}"))
        await asyncio.sleep(idle_seconds)
        times["after idle"].append(await first_token_ms(graph, f"idle-{index}"))
    return {name: statistics.median(values) for name, values in times.items()}


if __name__ == "__main__":
    main()
