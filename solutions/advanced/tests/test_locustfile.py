"""The load test (exercise 3): the locustfile runs headless against a real server and enforces its budgets."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.stage import run_stage

STAGE = Path(__file__).resolve().parents[1]


def _locust(url: str, **budgets: str) -> subprocess.CompletedProcess[str]:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent)) or "locust"
    command = [
        locust,
        "-f",
        "locustfile.py",
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "-t",
        "4s",
        "--host",
        url,
        "--only-summary",
    ]
    env = {**os.environ, **budgets}
    return subprocess.run(command, cwd=STAGE, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_locust_meets_and_breaks_budgets(tmp_path: Path) -> None:
    """A short run passes generous budgets and fails an impossible p95 budget, with the reason printed."""
    env = {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'l.db'}", "BCRYPT_ROUNDS": "4", "LOG_LEVEL": "WARNING"}
    with run_stage(STAGE, env) as stage:
        met = _locust(stage.url, LOAD_MAX_P95_MS="10000", LOAD_MAX_ERROR_RATE="0")
        broken = _locust(stage.url, LOAD_MAX_P95_MS="0.001")
    assert met.returncode == 0, met.stdout + met.stderr
    assert "LOAD BUDGET MET" in met.stdout
    assert broken.returncode == 1
    assert "LOAD BUDGET FAILED: p95" in broken.stdout
