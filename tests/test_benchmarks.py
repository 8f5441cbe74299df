"""The benchmarks of tests/benchmarks: they import, read wrk's output, and a very short bench runs to its end.

No timing is asserted here: timings belong to `nox -s bench`, read as ratios of one run.
"""

import re
import shutil
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

from tests.benchmarks import (
    after_idle,
    agent_latency,
    baseline_app,
    bench,
    count_instructions,
    graph_steps,
    load,
    loadgen,
    plot_load,
    profile_hot_path,
    servers,
    ttft_parts,
)
from tests.support.services import unavailable
from tests.support.stage import ROOT

# `wrk -t1 -c4 -d1s --latency` output (Debian's wrk 4.1.0, a server answering 404), with a p50 in µs and
# socket errors written in, as wrk prints them.
WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:38999/nonexistent
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.88ms    3.89ms  20.02ms   83.71%
    Req/Sec     1.33k   585.17     2.56k    70.00%
  Latency Distribution
     50%  812.00us
     75%    5.70ms
     90%    9.75ms
     99%   15.99ms
  1329 requests in 1.00s, 674.88KB read
  Non-2xx or 3xx responses: 1329
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   1323.64
Transfer/sec:    672.16KB
"""


def _run_benchmark(module: str, *args: str, timeout: float) -> str:
    """Run `python -m tests.benchmarks.<module> <args>` from the repository root; its output, once it exits 0."""
    command = [sys.executable, "-m", f"tests.benchmarks.{module}", *args]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_benchmark_modules_import() -> None:
    """Every benchmark module imports without starting anything."""
    modules = (agent_latency, baseline_app, bench, count_instructions, load, loadgen, plot_load, profile_hot_path)
    modules += (after_idle, graph_steps, servers, ttft_parts)
    assert all(module.__doc__ for module in modules)


def test_wrk_output_is_read_with_its_units() -> None:
    """Requests/sec, p50 and p99 (µs and ms), non-2xx answers and socket errors come out of wrk's text."""
    result = loadgen.parse_wrk(WRK_OUTPUT)
    assert result.requests == 1329 and result.seconds == 1.0
    assert result.requests_per_second == 1323.64
    assert result.p50_ms == pytest.approx(0.812) and result.p99_ms == pytest.approx(15.99)
    assert result.non_2xx == 1329 and result.errors == 3


def test_wrk_output_without_percentiles_is_refused() -> None:
    """Output without --latency's distribution is not mistaken for a measurement."""
    with pytest.raises(ValueError, match="wrk --latency"):
        loadgen.parse_wrk(WRK_OUTPUT.replace("     99%   15.99ms\n", ""))


def test_the_wrk_script_sends_the_body_and_headers_verbatim() -> None:
    """The Lua script quotes with long brackets, so JSON and header values need no escaping."""
    target = loadgen.Target("t", "http://127.0.0.1:1/", '{"query": "a ]] b"}', {"Authorization": "Bearer x.y"})
    script = loadgen.wrk_script(target)
    assert 'wrk.body = [=[{"query": "a ]] b"}]=]' in script
    assert "wrk.headers[ [[Authorization]] ] = [[Bearer x.y]]" in script


def test_the_baseline_key_normalises_the_query_as_the_cache_does() -> None:
    """Case and spacing do not change where the baseline looks its answer up."""
    assert baseline_app.answer_key("What is  12 * 7?") == baseline_app.answer_key("what is 12 * 7?")


def test_the_bare_stream_waits_once_per_model_call() -> None:
    """The TTFT floor: `calls` waits of `delay_ms` each before the token (a lower bound: a sleep is never short)."""
    with TestClient(baseline_app.create_app()) as client:
        started = time.monotonic()
        response = client.post("/api/v1/query/stream?delay_ms=40&calls=3", json={"query": "hello"})
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert [line for line in response.text.splitlines() if line.startswith("event:")] == [
        "event: start",
        "event: token",
        "event: done",
    ]
    assert elapsed >= 0.12


@pytest.mark.service
def test_a_short_bench_completes_and_prints_the_three_ratios() -> None:
    """One 1 s round each, 5 concurrent queries and one stream: it ends cleanly and prints every ratio."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    short = ["--seconds", "1", "--rounds", "1", "--warmup", "0", "--concurrency", "5", "--ttft-samples", "1"]
    stdout = _run_benchmark("bench", *short, "--delay-ms", "20", "--floor-rounds", "1", timeout=100)
    for ratio in ("cached_throughput solution/baseline", "concurrency 5/1 wall time", "ttft_overhead_ms"):
        assert f"RATIO {ratio} = " in stdout
    for part in ("ttft_graph_alone_ms", "ttft_service_ms"):  # the overhead split into the graph's and the rest
        assert f"of which {part} = " in stdout, stdout
    assert "INVALID" not in stdout


@pytest.mark.service
def test_the_ttft_parts_run_every_configuration() -> None:
    """Each configuration of ttft_parts starts, streams and is compared with the bare endpoint."""
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed")
    stdout = _run_benchmark("ttft_parts", "--samples", "1", "--delay-ms", "10", timeout=150)
    measured = re.findall(r"^  (\S.*?)\s+(-?[\d.]+) ms$", stdout, re.MULTILINE)
    assert [name for name, _ in measured] == [name for name, _ in ttft_parts.STEPS], stdout


@pytest.mark.service
def test_a_short_instruction_count_completes_and_prints_a_count_per_answer() -> None:
    """Forty cached answers counted under callgrind: the run ends cleanly and prints a plausible count."""
    for tool in ("redis-server", "valgrind", "gcc"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")
    stdout = _run_benchmark("count_instructions", "--requests", "40", "--warmup", "16", timeout=300)
    per_answer = int(stdout.rsplit("= ", 1)[1].split()[0].replace(",", ""))
    # A cached answer takes about 1.4 M instructions here: far more than nothing, far less than an agent run.
    assert 100_000 < per_answer < 50_000_000, stdout


def test_the_graph_step_comparison_times_both_graphs_to_the_writer() -> None:
    """Both graphs run to the writer's first token (the script raises if either sends none) and are compared."""
    stdout = _run_benchmark("graph_steps", "--runs", "5", "--warmup", "1", timeout=120)
    medians = [float(found) for found in re.findall(r":\s+([\d.]+) ms$", stdout, re.MULTILINE)]
    assert len(medians) == 2 and all(median > 0 for median in medians), stdout
    assert "one step fewer saves" in stdout, stdout


def test_the_idle_comparison_times_the_graph_both_ways() -> None:
    """The graph runs to the writer's first token back to back and after a pause, and both medians are printed."""
    stdout = _run_benchmark("after_idle", "--pairs", "3", "--warmup", "1", "--idle-ms", "20", timeout=120)
    medians = [float(found) for found in re.findall(r":\s+([\d.]+) ms$", stdout, re.MULTILINE)]
    assert len(medians) == 2 and all(median > 0 for median in medians), stdout
    assert "waking up adds" in stdout, stdout


def test_the_floor_times_the_waits_the_model_and_the_graph() -> None:
    """The three ways to the first token each run (the script raises if the model or the graph sends no token),
    and none is quicker than the waits it contains."""
    short = ["--rounds", "2", "--warmup", "1", "--delay-ms", "10", "--idle-ms", "20"]
    stdout = _run_benchmark("ttft_floor", *short, timeout=120)
    medians = [float(found) for found in re.findall(r"\s([\d.]+) ms(?: \(\+[\d.]+\))?$", stdout, re.MULTILINE)]
    assert len(medians) == 3, stdout
    # Two waits of 10 ms stand in each. uvloop's timers count whole milliseconds, so a wait can end up to a
    # millisecond early (9.1 ms for 10 in a probe here): the bound leaves room for that.
    assert all(median >= 16 for median in medians), stdout
    assert "the graph by itself adds" in stdout, stdout
