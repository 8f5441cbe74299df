"""Plot a Locust run from its `_stats_history.csv`: throughput and p95 latency over time, against the budget."""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display here or in CI
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[2]
AGGREGATED = "Aggregated"

USAGE = """\
python tests/benchmarks/plot_load.py [--csv build/load/advanced] [--output build/load/load.png]
"""


@dataclass
class Series:
    """One history name's rows: seconds since the start, and the columns plotted."""

    seconds: list[float] = field(default_factory=list)
    users: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    failures: list[float] = field(default_factory=list)
    p95: list[float] = field(default_factory=list)

    def rate(self, counts: list[float], window: int = 3) -> list[float]:
        """Per-second rate of a running total, averaged over the last `window` rows (Locust writes one a second).

        Locust's own Requests/s column is a mean over a trailing window that starts empty, so a short run's
        ramp would read as a slow climb.
        """
        rates = [math.nan]
        for index in range(1, len(counts)):
            first = max(index - window, 0)
            elapsed = self.seconds[index] - self.seconds[first]
            rates.append((counts[index] - counts[first]) / elapsed if elapsed > 0 else math.nan)
        return rates


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # Locust writes N/A before the first response
        return math.nan


def read_history(path: Path) -> dict[str, Series]:
    """Each name's series (`Aggregated`, and each endpoint when Locust ran with --csv-full-history)."""
    with open(path, newline="") as history:
        rows = list(csv.DictReader(history))
    if not rows:
        raise SystemExit(f"{path} has no rows")
    start = float(rows[0]["Timestamp"])
    series: dict[str, Series] = {}
    for row in rows:
        name = f"{row['Type']} {row['Name']}".strip()
        entry = series.setdefault(name, Series())
        entry.seconds.append(float(row["Timestamp"]) - start)
        entry.users.append(_number(row["User Count"]))
        entry.requests.append(_number(row["Total Request Count"]))
        entry.failures.append(_number(row["Total Failure Count"]))
        p95 = _number(row["95%"])
        entry.p95.append(p95 if p95 > 0 else math.nan)  # 0: no response in the window yet
    return series


def plot(history: Path, output: Path, *, budget_ms: float, title: str) -> None:
    """Two panels sharing the time axis: requests and failures per second (and users), then the p95."""
    series = read_history(history)
    total = series[AGGREGATED]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, constrained_layout=True)
    top.plot(total.seconds, total.rate(total.requests), color="tab:blue", linewidth=2, label="requests/s (3 s mean)")
    top.plot(total.seconds, total.rate(total.failures), color="tab:red", linewidth=1.5, label="failures/s")
    top.set_ylabel("requests per second")
    top.set_ylim(bottom=0)
    users = top.twinx()
    users.plot(total.seconds, total.users, color="grey", linestyle=":", label="simulated users")
    users.set_ylabel("users")
    users.set_ylim(bottom=0)
    handles = top.get_legend_handles_labels()[0] + users.get_legend_handles_labels()[0]
    top.legend(handles, [str(h.get_label()) for h in handles], loc="lower right")
    top.grid(alpha=0.3)

    bottom.plot(total.seconds, total.p95, color="black", linewidth=2.5, label="all endpoints")
    for name, entry in sorted(series.items()):
        if name != AGGREGATED and any(not math.isnan(value) for value in entry.p95):
            bottom.plot(entry.seconds, entry.p95, linewidth=1.2, label=name)
    bottom.axhline(budget_ms, color="tab:red", linestyle="--", label=f"p95 budget, {budget_ms:g} ms")
    # A log scale shows the quick endpoints (tens of ms) and the agent's queries (seconds) together.
    bottom.set_yscale("log")
    bottom.set_ylabel("p95 latency over the last 10 s, ms")
    bottom.set_xlabel("seconds since the start")
    bottom.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize="small", frameon=False)
    bottom.grid(alpha=0.3, which="both")
    figure.suptitle(title)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", type=Path, default=ROOT / "build" / "load" / "advanced", help="Locust's CSV prefix")
    parser.add_argument("--output", type=Path, default=ROOT / "build" / "load" / "load.png")
    parser.add_argument("--budget-ms", type=float, default=float(os.environ.get("LOAD_MAX_P95_MS", "2000")))
    parser.add_argument("--title", default="Locust against the advanced solution (one uvicorn worker)")
    args = parser.parse_args(argv)
    plot(Path(f"{args.csv}_stats_history.csv"), args.output, budget_ms=args.budget_ms, title=args.title)
    print(f"plot: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
