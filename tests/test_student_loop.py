"""The student's loop, tried as a student does: the access log, `nox -s serve`, the lab tests and the sheets."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.support.stage import ROOT, run_stage

STARTERS = {"medium": ROOT / "medium_lab", "advanced": ROOT / "advanced_lab"}


def _access_statuses(log: str, path: str) -> list[int]:
    """The status each access line for `path` reports: the medium lab's text lines, the advanced lab's JSON."""
    found = [int(status) for status in re.findall(rf"\bGET {re.escape(path)} (\d{{3}})\b", log)]
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("path") == path and "status_code" in entry:
                found.append(int(entry["status_code"]))
    return found


@pytest.mark.parametrize("lab", list(STARTERS))
def test_the_starters_access_log_reports_the_status_the_client_got(lab: str) -> None:
    """In a starter with no TODO done, the access line of GET /health says 200, as the client saw, never 500."""
    with run_stage(STARTERS[lab], {"LOG_FORMAT": "json"}) as stage:
        assert httpx.get(f"{stage.url}/health", timeout=10).status_code == 200
        log = stage.log()
    statuses = _access_statuses(log, "/health")
    assert 500 not in statuses, log
    if lab == "medium":  # the medium starter's access line is given code; the advanced one is TODO 4
        assert 200 in statuses, log
