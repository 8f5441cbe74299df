"""`nox -s bench`: a cached answer through the production stack against a bare endpoint, and agent latency."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repository root makes `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
import redis

from tests.benchmarks import servers
from tests.benchmarks.agent_latency import (
    MODEL_CALLS_BEFORE_FIRST_TOKEN,
    StreamTarget,
    measure_concurrency,
    measure_ttft,
    measure_ttft_in_turns,
)
from tests.benchmarks.baseline_app import answer_key
from tests.benchmarks.loadgen import LoadGenerator, LoadResult, Target, load_generator
from tests.benchmarks.ttft_floor import describe as describe_floor
from tests.benchmarks.ttft_floor import measure as measure_floor
from tests.support.services import redis_server

CACHED_QUERY = "What is 12 * 7?"
GOAL_THROUGHPUT, GOAL_CONCURRENCY, GOAL_TTFT_MS = 0.5, 1.5, 5.0
# Where the solution keeps the cache-hit turns it writes behind (app/pending_turns.py).
PENDING_QUEUE, PENDING_TURNS = "agent:pending:queue", "agent:pending:turn:*"
_COUNTER = re.compile(r"^(cache_hits_total|cache_misses_total)\s+(\S+)$", re.MULTILINE)

USAGE = """\
python tests/benchmarks/bench.py [--seconds N] [--rounds R] [--loadgen auto|wrk|python] [--strict]

Prints throughput, p50 and p99 of both servers (rounds alternate A B A B), the ratio solution/baseline,
the concurrency ratio and the SSE time-to-first-token overhead, split into the graph's own part (timed
in-process, with no service around it) and the rest. Exits 1 if a measurement was invalid
(an answer that was not a cache HIT, a non-2xx), and with --strict also if a goal was missed.
"""


@dataclass
class Verdicts:
    """Each goal's measured value and whether it was met; any invalid measurement."""

    lines: list[str] = field(default_factory=list)
    missed: int = 0
    invalid: list[str] = field(default_factory=list)

    def add(self, name: str, value: float, goal: str, met: bool) -> None:
        self.missed += not met
        self.lines.append(f"RATIO {name} = {value:.3f} (goal {goal}: {'MET' if met else 'NOT MET'})")

    def note(self, name: str, value: float, meaning: str) -> None:
        """A measured value that is no goal but explains one."""
        self.lines.append(f"  of which {name} = {value:.3f} ({meaning})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The options; with the defaults the whole bench takes about four and a half minutes."""
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each measured round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="A B rounds (default 3)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds before each round (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: 2 cores are shared)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent uncached queries (default 50)")
    parser.add_argument("--delay-ms", type=float, default=200, help="model first-token delay for the agent parts")
    parser.add_argument("--ttft-samples", type=int, default=5, help="streams timed for TTFT (default 5)")
    parser.add_argument(
        "--floor-rounds", type=int, default=15, help="in-process rounds for the graph's own part of TTFT (default 15)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    return parser.parse_args(argv)


def cache_counters(url: str) -> dict[str, float]:
    """cache_hits_total and cache_misses_total from the solution's metrics."""
    text = httpx.get(f"{url}/api/v1/metrics", timeout=10).text
    return {name: float(value) for name, value in _COUNTER.findall(text)}


def ask_cached(url: str, token: str) -> httpx.Response:
    """The benchmarked request, sent once."""
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/api/v1/query", json={"query": CACHED_QUERY}, headers=headers, timeout=30)


def prime(url: str, token: str, redis_url: str) -> bytes:
    """Cache the answer in the solution, then store the same bytes under the baseline's key."""
    first, second = ask_cached(url, token), ask_cached(url, token)
    if second.status_code != 200 or second.headers.get("X-Cache") != "HIT":
        raise RuntimeError(f"priming failed: {first.status_code}/{second.status_code} {second.text[:300]}")
    with redis.Redis.from_url(redis_url) as client:
        client.set(answer_key(CACHED_QUERY), second.content)
    print(f"primed: first answer X-Cache={first.headers.get('X-Cache')}, second X-Cache=HIT ({len(second.content)} B)")
    return second.content


@dataclass(frozen=True)
class WriteBehind:
    """The solution's deferred work after a run: turns still pending, how long and how much CPU writing them took."""

    turns: int
    seconds: float
    cpu_seconds: float


@dataclass
class Rounds:
    """The measured runs of each target, in round order, and the warm-up runs (checked, not reported)."""

    measured: dict[str, list[LoadResult]]
    warm_ups: dict[str, list[LoadResult]]
    cpu: dict[str, list[float]] = field(default_factory=dict)  # the server's CPU seconds in each measured run
    write_behind: list[WriteBehind] = field(default_factory=list)  # after each measured solution run

    def all_runs(self) -> list[LoadResult]:
        return [run for runs in (*self.measured.values(), *self.warm_ups.values()) for run in runs]


class PendingWatch:
    """Waits until the solution has written every cache-hit turn it deferred (app/pending_turns.py)."""

    def __init__(self, redis_url: str, pid: int, limit: float = 300.0) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.pid, self.limit = pid, limit

    def pending(self) -> int:
        queued = int(self.client.llen(PENDING_QUEUE))
        return queued or sum(1 for _ in self.client.scan_iter(match=PENDING_TURNS, count=1000))

    def settle(self) -> WriteBehind:
        """Block until nothing is pending (or the limit passes); what that took."""
        turns, started, cpu = self.pending(), time.monotonic(), servers.cpu_seconds(self.pid) or 0.0
        while self.pending() and time.monotonic() - started < self.limit:
            time.sleep(0.1)
        if left := self.pending():
            raise RuntimeError(f"{left} turns still pending after {self.limit:.0f} s")
        return WriteBehind(turns, time.monotonic() - started, (servers.cpu_seconds(self.pid) or 0.0) - cpu)


def run_rounds(
    args: argparse.Namespace, generator: LoadGenerator, targets: list[Target], pids: dict[str, int], watch: PendingWatch
) -> Rounds:
    """Warm up and measure each target in turn, A B A B, `rounds` times.

    After every solution run, its deferred writes are left to finish before anything else runs, so that they
    neither overlap the baseline's run nor go unreported.
    """
    rounds = Rounds({t.name: [] for t in targets}, {t.name: [] for t in targets}, {t.name: [] for t in targets})
    for round_number in range(1, args.rounds + 1):
        for target in targets:
            if args.warmup > 0:
                rounds.warm_ups[target.name].append(generator.run(target, args.warmup))
                if target.name == "solution":
                    watch.settle()
            cpu_before = servers.cpu_seconds(pids[target.name]) or 0.0
            result = generator.run(target, args.seconds)
            rounds.cpu[target.name].append((servers.cpu_seconds(pids[target.name]) or 0.0) - cpu_before)
            rounds.measured[target.name].append(result)
            print(
                f"  round {round_number} {target.name:<9} {result.requests_per_second:9.1f} req/s  "
                f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  non-2xx {result.non_2xx}  "
                f"errors {result.errors}",
                flush=True,
            )
            if target.name == "solution":
                deferred = watch.settle()
                rounds.write_behind.append(deferred)
                print(
                    f"          then {deferred.turns} turns still pending, written in {deferred.seconds:.2f} s "
                    f"using {deferred.cpu_seconds:.2f} s of the worker's CPU",
                    flush=True,
                )
    return rounds


def summarise_cached(rounds: Rounds, verdicts: Verdicts) -> None:
    """The table of medians over the rounds, and the median of the per-round ratios."""
    results = rounds.measured
    print("\n| target | req/s (median) | p50 ms (median) | p99 ms (median) | rounds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in ("solution", "baseline"):
        runs = results[name]
        rps = statistics.median(r.requests_per_second for r in runs)
        p50, p99 = statistics.median(r.p50_ms for r in runs), statistics.median(r.p99_ms for r in runs)
        print(f"| {name} | {rps:.1f} | {p50:.2f} | {p99:.2f} | {len(runs)} |")
    per_round = [
        a.requests_per_second / b.requests_per_second
        for a, b in zip(results["solution"], results["baseline"], strict=True)
    ]
    ratio = statistics.median(per_round)
    print(f"per-round ratios solution/baseline: {', '.join(f'{value:.3f}' for value in per_round)}")
    summarise_cpu(rounds)
    verdicts.add("cached_throughput solution/baseline", ratio, f">= {GOAL_THROUGHPUT}", ratio >= GOAL_THROUGHPUT)


def summarise_cpu(rounds: Rounds) -> None:
    """The server's CPU per request, which other work on the machine disturbs far less than req/s, and the
    solution's again with the write-behind it deferred: what a cached answer in a new session costs in all."""
    if not all(rounds.cpu.values()) or not all(rounds.cpu["solution"]):
        print("CPU per request: not measured (no /proc here)")
        return

    def per_request(name: str, extra: list[float] | None = None) -> float:
        runs, cpu = rounds.measured[name], rounds.cpu[name]
        extra = extra or [0.0] * len(runs)
        return statistics.median((c + e) / max(r.requests, 1) * 1000 for r, c, e in zip(runs, cpu, extra, strict=True))

    solution, baseline = per_request("solution"), per_request("baseline")
    deferred = [w.cpu_seconds for w in rounds.write_behind]
    in_all = per_request("solution", deferred)
    print(
        f"CPU per request (median over rounds): solution {solution:.3f} ms, baseline {baseline:.3f} ms, "
        f"ratio baseline/solution {baseline / solution:.3f}\n"
        f"  with the write-behind of its new sessions counted: solution {in_all:.3f} ms per request, "
        f"ratio {baseline / in_all:.3f} (the throughput a worker could sustain if every cached answer started a "
        "session, forever)"
    )


def check_hits(url: str, token: str, before: dict[str, float], rounds: Rounds, verdicts: Verdicts) -> None:
    """Every answer the solution gave under load was a cache HIT, and no request of either target failed."""
    after = cache_counters(url)
    sample = ask_cached(url, token)
    completed = sum(r.requests for r in (*rounds.measured["solution"], *rounds.warm_ups["solution"]))
    hits = after["cache_hits_total"] - before["cache_hits_total"]
    misses = after["cache_misses_total"] - before["cache_misses_total"]
    failed = sum(r.non_2xx + r.errors for r in rounds.all_runs())
    print(
        f"check: sample after the run {sample.status_code} X-Cache={sample.headers.get('X-Cache')}; "
        f"cache_hits_total +{hits:.0f} for {completed} solution requests completed by the load generator; "
        f"cache_misses_total +{misses:.0f}; non-2xx and socket errors, both targets: {failed}"
    )
    if sample.headers.get("X-Cache") != "HIT" or misses or failed or hits < completed:
        verdicts.invalid.append("the cached run was not all 2xx cache HITs")


def cached_benchmark(args: argparse.Namespace, redis_url: str, folder: Path, verdicts: Verdicts) -> None:
    """The same cached request against the solution (A) and the baseline (B) in turns."""
    generator = load_generator(args.loadgen, threads=args.threads, connections=args.connections)
    env = servers.solution_env(redis_url, folder / "bench.db")
    with servers.solution(env) as stage, servers.baseline(redis_url) as (baseline_url, baseline_pid):
        token = servers.login(stage.url)
        body = prime(stage.url, token, redis_url)
        baseline_answer = httpx.post(f"{baseline_url}/api/v1/query", json={"query": CACHED_QUERY}, timeout=10)
        if baseline_answer.content != body:
            raise RuntimeError(f"the baseline does not serve the stored answer: {baseline_answer.text[:200]}")
        print(f"load generator: {generator.description}")
        print(
            f"A = solution (auth, rate limit, cache HIT, metrics, JSON logs; one worker) {stage.url}\n"
            f"B = baseline (body parsing and one Redis GET; one worker) {baseline_url}\n"
            f"{args.rounds} round(s) x {args.seconds} s each, after {args.warmup} s of warm-up each, A B A B"
        )
        request = f'{{"query": "{CACHED_QUERY}"}}'
        targets = [
            Target("solution", f"{stage.url}/api/v1/query", request, {"Authorization": f"Bearer {token}"}),
            Target("baseline", f"{baseline_url}/api/v1/query", request),
        ]
        before = cache_counters(stage.url)
        pids = {"solution": stage.process.pid, "baseline": baseline_pid}
        rounds = run_rounds(args, generator, targets, pids, PendingWatch(redis_url, stage.process.pid))
        check_hits(stage.url, token, before, rounds, verdicts)
        summarise_cached(rounds, verdicts)
        zero = [sample.milliseconds for sample in measure_ttft(stage.url, token, samples=args.ttft_samples)]
        print(f"\nTTFT with a zero-delay model on this server: median {statistics.median(zero):.2f} ms")


def agent_benchmark(args: argparse.Namespace, redis_url: str, folder: Path, verdicts: Verdicts) -> None:
    """Uncached runs on a second solution whose model has a first-token delay: concurrency and TTFT."""
    delay = args.delay_ms
    env = servers.solution_env(redis_url, folder / "agent.db", first_token_delay_ms=delay, token_delay_ms=0)
    print(f"\nuncached agent runs: a second solution, offline model with {delay:g} ms first-token delay, 0 per token")
    with servers.solution(env) as stage, servers.baseline(redis_url) as (baseline_url, _):
        token = servers.login(stage.url)
        report_concurrency(stage.url, token, args.concurrency, verdicts)
        overhead = report_ttft(stage.url, token, baseline_url, args.ttft_samples, delay, verdicts)
    report_floor(overhead, delay, args.floor_rounds, verdicts)


def report_concurrency(url: str, token: str, count: int, verdicts: Verdicts) -> None:
    """Wall time of `count` uncached queries at once against one alone; every answer must be a 200 MISS."""
    run = measure_concurrency(url, token, count=count)
    print(
        f"concurrency: 1 uncached query {run.single_seconds:.3f} s (median of 3); "
        f"{run.count} different uncached queries at once {run.concurrent_seconds:.3f} s "
        "(each: supervisor, researcher, tools, researcher, writer = 4 model calls)"
    )
    if run.problems:
        verdicts.invalid.append(f"uncached queries: {run.problems[:3]}")
    goal = f"<= {GOAL_CONCURRENCY}"
    verdicts.add(f"concurrency {run.count}/1 wall time", run.ratio, goal, run.ratio <= GOAL_CONCURRENCY)


def report_ttft(url: str, token: str, baseline_url: str, samples: int, delay: float, verdicts: Verdicts) -> float:
    """Time to the first token of a stream, against bare SSE endpoints that wait only the model's delays.

    All are timed by the same client, in turns, so the client's own work and the machine's timer and wake-up
    latencies are in each; the difference is what the stack adds. Two model calls stand before the first token,
    and the goal's floor is the model's own: two waits, one per call, each ending in a timer and a wake-up as in
    any service that calls the model twice. The bare endpoint that waits the same total once (the floor until
    section 12 of the results page) is timed too and printed beside it.
    """
    calls = MODEL_CALLS_BEFORE_FIRST_TOKEN
    own = calls * delay
    per_call = StreamTarget(baseline_url, "", f"/api/v1/query/stream?delay_ms={delay:g}&calls={calls}")
    one_wait = StreamTarget(baseline_url, "", f"/api/v1/query/stream?delay_ms={own:g}&calls=1")
    streams, bare_streams, one_wait_streams = measure_ttft_in_turns(
        [StreamTarget(url, token), per_call, one_wait], samples=samples
    )
    times, bare_times = [s.milliseconds for s in streams], [s.milliseconds for s in bare_streams]
    median, bare_median = statistics.median(times), statistics.median(bare_times)
    one_wait_median = statistics.median(s.milliseconds for s in one_wait_streams)
    overhead = median - bare_median
    steps = " | ".join(sorted({" -> ".join(stream.steps_before) for stream in streams}))
    print(
        "TTFT: from sending POST /api/v1/query/stream {'query': 'hello'} to its first `event: token` line, "
        f"{len(times)} streams one at a time: median {median:.2f} ms, min {min(times):.2f} ms\n"
        f"  steps finished before the first token: {steps}. 'hello' goes supervisor -> writer, so {calls} model "
        f"calls stand before it:\n  the supervisor's routing call ({delay:g} ms) and the writer's first token "
        f"({delay:g} ms): the model's own first-token delay for this graph is {own:g} ms.\n"
        f"  a bare SSE endpoint that only waits {calls} x {delay:g} ms (the model's calls), timed in turns with it "
        f"by the same client: median {bare_median:.2f} ms, min {min(bare_times):.2f} ms\n"
        f"  overhead = {median:.2f} - {bare_median:.2f} = {overhead:.2f} ms (over the nominal {own:g} ms: "
        f"{median - own:.2f} ms, of which {bare_median - own:.2f} ms are the client's, the timers' and the "
        "machine's own)\n"
        f"  beside it, a bare endpoint that waits {own:g} ms once: median {one_wait_median:.2f} ms, so "
        f"{median - one_wait_median:.2f} ms over that one"
    )
    verdicts.add("ttft_overhead_ms", overhead, f"<= {GOAL_TTFT_MS:g} ms", overhead <= GOAL_TTFT_MS)
    return overhead


def report_floor(overhead: float, delay: float, rounds: int, verdicts: Verdicts) -> None:
    """How much of the first token's overhead the course graph takes by itself, in this process, with no server.

    The solution and the bare endpoint are stopped by now, so the graph runs on a quiet machine, as the solution's
    worker did between streams. Its part is a floor for any service around this graph: no HTTP, auth, Redis or
    database in it.
    """
    if rounds < 1:
        return
    idle_ms = 200
    floor = measure_floor(delay_ms=delay, rounds=rounds, warmup=min(3, rounds), idle_ms=idle_ms)
    print(f"\n{describe_floor(floor, delay, idle_ms)}")
    service = overhead - floor.graph_over_waits
    print(
        f"  so of the stack's {overhead:.2f} ms over the bare endpoint, about {floor.graph_over_waits:.2f} ms are the "
        f"graph's own and {service:.2f} ms the service's (HTTP, auth, rate limit, session lock, checkpoint database, "
        "the stream)"
    )
    verdicts.note("ttft_graph_alone_ms", floor.graph_over_waits, "the course graph in-process, no service around it")
    verdicts.note("ttft_service_ms", service, "the rest: what the service adds around the graph")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    print(f"machine: {servers.machine()}")
    print(
        f"caveat: the load generator, redis-server and the server under test share these {os.cpu_count()} cores "
        "with whatever else runs here; read the ratios of one run, not absolute numbers across runs or machines"
    )
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed (Debian: apt-get install redis-server)")
    verdicts = Verdicts()
    with redis_server() as server, tempfile.TemporaryDirectory(prefix="bench-") as folder:
        print(f"redis-server {server.url} (throwaway)\n")
        cached_benchmark(args, server.url, Path(folder), verdicts)
        # Database 1, so that none of the uncached questions can meet an answer cached above.
        agent_benchmark(args, server.url.rsplit("/", 1)[0] + "/1", Path(folder), verdicts)
    print()
    print("\n".join(verdicts.lines))
    for problem in verdicts.invalid:
        print(f"INVALID: {problem}")
    print(f"bench took {time.monotonic() - started:.1f} s; machine after: {servers.machine().split('; ')[-1]}")
    if verdicts.invalid or (args.strict and verdicts.missed):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
