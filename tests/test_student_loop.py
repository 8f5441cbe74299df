"""The student's loop, tried as a student does: the access log, `nox -s serve`, the lab tests and the sheets."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.services import unavailable
from tests.support.stage import ROOT, free_port, run_stage, stop

STARTERS = {"medium": ROOT / "medium_lab", "advanced": ROOT / "advanced_lab"}
NOX = ROOT / ".venv" / "bin" / "nox"  # as the README's set-up makes it
# Two checks the medium starter fails, each with a hint that names a TODO.
TWO_FAILURES = "api.query_shape,errors.validation_length"


def _nox_env() -> dict[str, str]:
    """This environment without the test run's own virtual environment, as a student's shell has it."""
    if not NOX.is_file():
        unavailable(f"{NOX.relative_to(ROOT)} is missing (the README's set-up makes it)")
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if "/.nox/" not in part)
    return env


def _nox(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/nox ARGS` from the repository's root, its output (stdout and stderr together) as text."""
    return subprocess.run(
        [str(NOX), *args],
        cwd=ROOT,
        env=_nox_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


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


def test_nox_grade_ends_a_partial_grade_with_the_graders_line_and_exit_1_not_a_crash() -> None:
    """`nox -s grade` on a partial grade exits 1 with the grader's line last, and no failed-command or
    failed-session message from nox; a folder that is no stage still exits 2."""
    partial = _nox("-s", "grade", "--", "medium_lab", "--only", TWO_FAILURES)
    assert partial.returncode == 1, partial.stdout
    assert re.fullmatch(r"0/4: 2 checks to go, start with TODO \d+", _lines(partial.stdout)[-1]), partial.stdout
    assert not [line for line in partial.stdout.splitlines() if line.startswith("nox >") and "fail" in line]
    ungradable = _nox("-s", "grade", "--", "no_such_folder")
    assert ungradable.returncode == 2, ungradable.stdout
    assert _lines(ungradable.stdout)[-1].startswith("grader: cannot grade: no such folder"), ungradable.stdout


def test_nox_serve_refuses_a_taken_port_in_one_line_that_names_it_and_another() -> None:
    """A port something already listens on: `nox -s serve -- PATH --port N` stops at once with one line that
    names the port and the command for another, and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = _nox("-s", "serve", "--", "medium_lab", "--port", str(port), timeout=300)
    assert refused.returncode != 0, refused.stdout
    assert "Traceback" not in refused.stdout
    last = _lines(refused.stdout)[-1]
    assert f"port {port} on 127.0.0.1 is taken" in last, refused.stdout
    assert f".venv/bin/nox -s serve -- medium_lab --port {port + 1}" in last, refused.stdout


def test_nox_serve_runs_the_stage_on_the_port_given() -> None:
    """`nox -s serve -- medium_lab --port N` serves the stage on 127.0.0.1:N; Ctrl+C (SIGINT) stops it."""
    port = free_port()
    command = [str(NOX), "-s", "serve", "--", "medium_lab", "--port", str(port)]
    serving = subprocess.Popen(
        command, cwd=ROOT, env=_nox_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline, status = time.monotonic() + 240, 0
        while time.monotonic() < deadline and serving.poll() is None and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.2)
        assert status == 200, f"nothing answered on port {port} (nox exited with {serving.poll()})"
    finally:
        if serving.poll() is None:
            os.killpg(serving.pid, signal.SIGINT)  # the group we started: nox and its uvicorn, as Ctrl+C does
            try:
                serving.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(serving.pid, signal.SIGKILL)
        stop(serving)


SHEETS = [
    ROOT / "medium_lab" / "README.md",
    ROOT / "advanced_lab" / "README.md",
    ROOT / "solutions" / "medium" / "README.md",
    ROOT / "solutions" / "advanced" / "README.md",
]


def _student_section() -> str:
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Working through a lab (students)", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("sheet", SHEETS, ids=lambda path: str(path.relative_to(ROOT)))
def test_each_sheet_gives_commands_as_the_readmes_set_up_makes_them(sheet: Path) -> None:
    """Every nox command of a lab sheet is `.venv/bin/nox` (what the README's set-up installs), none runs pytest
    by hand or sends the student into solutions/, and the sheet names the lab-tests session and --port."""
    text = sheet.read_text()
    bare = [line for line in text.splitlines() if re.search(r"(?<!\.venv/bin/)\bnox -s ", line)]
    assert not bare, bare
    assert "PYTHONPATH=" not in text and "pytest solutions/" not in text
    assert re.search(r"\.venv/bin/nox -s labtests -- (medium_lab|advanced_lab|solutions/\w+)", text)
    assert "--port" in text
    if sheet.parent.name.endswith("_lab"):
        assert "solutions/" not in text, "a student's sheet sends them into solutions/"


def test_the_readmes_student_section_documents_serve_with_a_port_and_the_lab_tests() -> None:
    """The README's student section gives `serve -- PATH --port N`, the lab tests and the grader, as .venv/bin/nox."""
    section = _student_section()
    assert ".venv/bin/nox -s serve -- medium_lab --port 8001" in section
    assert ".venv/bin/nox -s labtests -- medium_lab" in section
    assert ".venv/bin/nox -s grade -- medium_lab" in section
    assert not re.search(r"(?<!\.venv/bin/)\bnox -s ", section)


def test_nox_labtests_runs_the_labs_tests_against_the_students_own_tree(tmp_path: Path) -> None:
    """`nox -s labtests -- medium_lab` runs from the README's set-up (no "No module named"), and the tests import
    the tree named: a completed copy elsewhere passes every test, and that copy broken fails them from itself."""
    starter = _nox("-s", "labtests", "--", "medium_lab", "-x", "-q")
    assert starter.returncode == 1, starter.stdout
    assert "No module named" not in starter.stdout
    assert re.search(r"^FAILED solutions/medium/tests/", starter.stdout, re.MULTILINE), starter.stdout
    copy = tmp_path / "my_medium_lab"
    shutil.copytree(ROOT / "solutions" / "medium", copy, ignore=shutil.ignore_patterns("tests", "__pycache__"))
    completed = _nox("-s", "labtests", "--", str(copy), "-q")
    assert completed.returncode == 0, completed.stdout[-4000:]
    assert re.search(r"^\d+ passed", completed.stdout, re.MULTILINE), completed.stdout[-4000:]
    service = copy / "app" / "agent_service.py"
    service.write_text('raise RuntimeError("this is the copy in my_medium_lab")\n' + service.read_text())
    broken = _nox("-s", "labtests", "--", str(copy), "-x", "-q")
    assert broken.returncode != 0, broken.stdout[-4000:]
    assert "RuntimeError: this is the copy in my_medium_lab" in broken.stdout, broken.stdout[-4000:]
