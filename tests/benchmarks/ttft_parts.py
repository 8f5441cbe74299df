"""What each concern of the stack adds to the time to first token, over HTTP, with the model's delays on.

`bench.py` reports the stack's overhead over a bare SSE endpoint that only waits the model's delays (one wait
per model call). This switches the stack's concerns off one after another, by settings alone, and measures the
same overhead at each step, each configuration timed in turns with the bare endpoint by the same client:

1. the whole stack, as `bench.py` runs it (auth, rate limit, cache, metrics, JSON access log at INFO);
2. without the rate limit (one Redis round trip before the route);
3. also without metrics;
4. also without the INFO log lines (LOG_LEVEL=WARNING).

What is left at the last step is the part no setting removes: the user's token, the session's lock (one Redis
round trip), the checkpoint read, the graph and the stream. Read the differences between the rows of one run.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.benchmarks import servers
from tests.benchmarks.agent_latency import MODEL_CALLS_BEFORE_FIRST_TOKEN, StreamTarget, measure_ttft_in_turns
from tests.support.services import redis_server

STEPS: list[tuple[str, dict[str, str]]] = [
    ("whole stack", {}),
    ("no rate limit", {"RATE_LIMIT_ENABLED": "false"}),
    ("no rate limit, no metrics", {"METRICS_ENABLED": "false"}),
    ("no rate limit, no metrics, no INFO logs", {"LOG_LEVEL": "WARNING"}),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=200, help="model first-token delay (default 200)")
    parser.add_argument("--samples", type=int, default=15, help="streams timed per configuration (default 15)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    args = parse_args(argv)
    calls = MODEL_CALLS_BEFORE_FIRST_TOKEN
    print(
        f"TTFT overhead over a bare SSE endpoint that waits {calls} x {args.delay_ms:g} ms (the model's calls); "
        f"median of {args.samples} streams each"
    )
    rows: list[tuple[str, float]] = []
    switched_off: dict[str, str] = {}
    with (
        redis_server() as redis,
        tempfile.TemporaryDirectory(prefix="ttft-") as folder,
        servers.baseline(redis.url) as (baseline_url, _),
    ):
        bare = StreamTarget(baseline_url, "", f"/api/v1/query/stream?delay_ms={args.delay_ms:g}&calls={calls}")
        for index, (name, settings) in enumerate(STEPS):
            switched_off |= settings
            database = Path(folder) / f"step-{index}.db"
            env = servers.solution_env(redis.url, database, first_token_delay_ms=args.delay_ms, token_delay_ms=0)
            with servers.solution(env | switched_off) as stage:
                token = servers.login(stage.url)
                streams, bare_streams = measure_ttft_in_turns(
                    [StreamTarget(stage.url, token), bare], samples=args.samples
                )
            stack = statistics.median(stream.milliseconds for stream in streams)
            overhead = stack - statistics.median(stream.milliseconds for stream in bare_streams)
            rows.append((name, overhead))
            print(f"  {name:<40} {overhead:6.2f} ms", flush=True)
    return rows


if __name__ == "__main__":
    main()
