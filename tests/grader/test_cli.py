"""`python -m grader`: exit codes, ungradable stages, report files, and stopping the stage when interrupted."""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader import reporters, starters
from grader.__main__ import _interruptible, main, sheet_order
from grader.core import Check, CheckResult, Report
from tests.grader.stages.advanced import MINI
from tests.support.stage import ROOT

MEDIUM_STARTER = ROOT / "medium_lab"
# Two checks the medium starter fails, each with a hint that names a TODO.
TWO_FAILURES = "api.query_shape,errors.validation_length"


def _stage(tmp_path: Path, main_py: str) -> Path:
    (tmp_path / "app").mkdir(parents=True)
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "main.py").write_text(main_py)
    return tmp_path


def test_a_missing_folder_cannot_be_graded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No such folder: exit 2 with a message that says so."""
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_a_folder_without_app_main_cannot_be_graded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder that is not a stage: exit 2, naming app/main.py."""
    assert main([str(tmp_path)]) == 2
    assert "has no app/main.py" in capsys.readouterr().err


def test_a_stage_that_crashes_at_import_exits_2_with_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stage that does not start: exit 2, the reason and the stage's own traceback on screen."""
    stage = _stage(tmp_path, 'raise RuntimeError("the student broke the import")\n')
    assert main([str(stage), "--only", "api.root"]) == 2
    captured = capsys.readouterr()
    assert "the stage did not start: the stage exited with code" in captured.err
    assert "RuntimeError: the student broke the import" in captured.out


def test_an_ungradable_stage_still_writes_a_gradescope_file(tmp_path: Path) -> None:
    """Gradescope gets a results.json with score 0 and the reason, even when nothing could run."""
    stage = _stage(tmp_path / "stage", "import nothing_of_that_name\n")
    results = tmp_path / "results" / "results.json"
    assert main([str(stage), "--format", "gradescope", "--output", str(results), "--only", "api.root"]) == 2
    document = json.loads(results.read_text())
    assert document["score"] == 0 and "ModuleNotFoundError" in document["output"]


def test_a_graded_stage_writes_the_chosen_format_and_a_github_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--format junit --output FILE writes XML; GITHUB_STEP_SUMMARY gets the Markdown table."""
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    report = tmp_path / "junit.xml"
    assert (
        main(
            [
                str(MINI),
                "--lab",
                "advanced",
                "--only",
                "metrics.exposition",
                "--format",
                "junit",
                "--output",
                str(report),
            ]
        )
        == 0
    )
    assert '<testcase classname="grader.metrics" name="metrics.exposition"' in report.read_text()
    assert summary.read_text().startswith("### Grader: 2/2")


def test_the_lab_is_detected_from_the_stage_files(capsys: pytest.CaptureFixture[str]) -> None:
    """A stage without the advanced lab's auth and cache modules is graded as the medium lab."""
    assert main([str(MINI), "--only", "api.root", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["lab"] == "medium"


def test_list_and_bad_only_names(capsys: pytest.CaptureFixture[str]) -> None:
    """--list prints the checks and their points; --only with an unknown name is a usage error."""
    assert main(["--list", "--lab", "advanced"]) == 0
    assert re.search(r"^\s*3  auth\.login ", capsys.readouterr().out, re.M)
    with pytest.raises(SystemExit) as exited:
        main([str(MINI), "--only", "no_such_topic"])
    assert exited.value.code == 2


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_grade_stops_the_stage(how: signal.Signals) -> None:
    """Interrupting the grader mid-grade stops the stage it started (and exits 130)."""
    command = [sys.executable, "-m", "grader", str(MINI), "--lab", "advanced", "--only", "load"]
    grader = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        port = None
        assert grader.stderr is not None
        for line in grader.stderr:
            if match := re.search(r"answers on http://127\.0\.0\.1:(\d+)", line):
                port = int(match.group(1))
                break
        assert port is not None and _answers(port)
        time.sleep(0.5)  # into the checks
        grader.send_signal(how)
        assert grader.wait(timeout=30) == 130
        assert not _answers(port)
    finally:
        if grader.poll() is None:
            grader.kill()
            grader.wait()
        if grader.stderr:
            grader.stderr.close()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupt_wins_even_when_a_library_loses_the_cancellation(how: signal.Signals) -> None:
    """Work that swallows its cancellation (as a library can) runs to its end, and is still reported interrupted."""
    finished = []

    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):  # lost here, as inside a library
            await asyncio.sleep(10)
        finished.append(True)
        return "graded"

    async def interrupted_soon() -> str:
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), how)
        return await _interruptible(stubborn())

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(interrupted_soon())
    assert finished == [True]


def _output_lines(completed: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in completed.stdout.splitlines() if line.strip()]


def test_a_partial_grade_prints_each_result_once_and_ends_with_where_to_start() -> None:
    """On one terminal (stdout and stderr together), each check's line appears once, with its feedback under it,
    and the last line gives the score, the checks to go and the TODO to start with, in the sheet's order."""
    command = [sys.executable, "-m", "grader", str(MEDIUM_STARTER), "--only", TWO_FAILURES]
    completed = subprocess.run(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=180, check=False
    )
    lines = _output_lines(completed)
    assert completed.returncode == 1, completed.stdout
    for check_id in TWO_FAILURES.split(","):
        assert sum(f" {check_id}: " in line for line in lines) == 1, completed.stdout
    named = {number for line in lines if "look at: TODO" in line for number in reporters.named_todos(line)}
    order = sheet_order(MEDIUM_STARTER)
    assert named and named <= set(order), completed.stdout
    first = min(named, key=order.index)
    assert lines[-1] == f"0/4: 2 checks to go, start with TODO {first}", completed.stdout


def _result(check_id: str, status: str, hint: str = "", reason: str = "") -> CheckResult:
    async def nothing(ctx: object) -> None:
        return None

    check = Check(check_id, f"The {check_id} statement.", 2, nothing)  # type: ignore[arg-type]
    return CheckResult(check, status, 2.0 if status == "passed" else 0.0, hint=hint, reason=reason)  # type: ignore[arg-type]


def test_the_last_line_starts_with_the_sheets_first_missing_todo() -> None:
    """The TODO to start with is the first in the sheet's order that a check not passed names (a hint's
    "TODO 5 and 7" names both); with none named, the first failed check; with none left, every check passed."""
    results = [
        _result("api.a", "passed"),
        _result("api.b", "failed", hint="TODO 7: app/routes/agent.py"),
        _result("api.c", "failed", hint="TODO 12 and 5: app/x.py"),
        _result("api.d", "skipped", reason="needs api.c to pass first"),
    ]
    report = Report("x", "medium", results)
    assert reporters.next_step(report) == "2/8: 3 checks to go, start with TODO 5"
    assert reporters.next_step(report, [1, 12, 7, 5]) == "2/8: 3 checks to go, start with TODO 12"
    unnamed = Report("x", "medium", [results[0], _result("api.e", "failed", hint="app/main.py: create_app")])
    assert reporters.next_step(unnamed) == "2/4: 1 check to go, start with check api.e"
    assert reporters.next_step(Report("x", "medium", results[:1])) == "2/2: every check passed"


def test_the_sheet_order_is_read_from_the_stages_own_todo_table() -> None:
    """The medium starter's sheet lists its TODOs in a table; the grader reads their order from it."""
    order = sheet_order(MEDIUM_STARTER)
    assert sorted(order) == sorted(todo.number for todo in starters.todos(ROOT / "solutions" / "medium"))
