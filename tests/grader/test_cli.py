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

from grader.__main__ import _interruptible, main
from tests.grader.stages.advanced import MINI
from tests.support.stage import ROOT


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
