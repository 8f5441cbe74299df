"""`python -m grader.batch`: a class of good, broken, hanging and zipped submissions, a gradebook and a summary."""

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grader import batch
from tests.support.stage import ROOT

MEDIUM_TOTAL = 77
IGNORE = shutil.ignore_patterns("__pycache__", ".venv", ".pytest_cache", "*.db", ".env")


def _copy(source: str, target: Path) -> Path:
    shutil.copytree(ROOT / source, target, ignore=IGNORE)
    return target


def _zip(folder: Path, archive: Path, top: str) -> None:
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zipped.write(path, f"{top}/{path.relative_to(folder).as_posix()}")


def _processes_under(folder: Path) -> list[int]:
    """PIDs of the processes whose working folder is under `folder` (the stages started from its copies)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = (entry / "cwd").readlink()
            except OSError:
                continue
            if cwd.is_relative_to(folder):
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def classroom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both medium stages, an empty folder, a stage that hangs at import, a syntax error, and a zipped solution."""
    submissions = tmp_path_factory.mktemp("submissions")
    _copy("solutions/medium", submissions / "ada")
    _copy("medium_lab", submissions / "bob")
    (submissions / "cleo").mkdir()
    hang = _copy("solutions/medium", submissions / "dan")
    main = hang / "app" / "main.py"
    main.write_text("import time\n\ntime.sleep(3600)  # a start-up that never ends\n" + main.read_text())
    broken = _copy("solutions/medium", submissions / "eve")
    (broken / "app" / "main.py").write_text((broken / "app" / "main.py").read_text() + "\ndef oops(:\n")
    staging = tmp_path_factory.mktemp("staging")
    _zip(_copy("solutions/medium", staging / "lab"), submissions / "fay.zip", "medium_lab")
    (submissions / ".DS_Store").write_text("not a submission")
    return submissions


@pytest.fixture(scope="module")
def graded(classroom: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float]:
    """The batch run once over the class: its output folder, what it printed, and how long it took."""
    out = tmp_path_factory.mktemp("grades")
    started = time.monotonic()
    command = [sys.executable, "-m", "grader.batch", str(classroom), "--lab", "medium", "--jobs", "2"]
    command += ["--out", str(out), "--timeout", "75", "--start-timeout", "120"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout + result.stderr, time.monotonic() - started


def _gradebook(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "gradebook.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == list(batch.GRADEBOOK_COLUMNS)
    return {row["student"]: row for row in rows}


def test_every_submission_gets_a_row_with_the_right_status(graded: tuple[Path, str, float]) -> None:
    """Solutions get full marks (twice: a folder and a zip), the starter fewer, the broken ones are ungradable."""
    out, _, seconds = graded
    rows = _gradebook(out)
    assert sorted(rows) == ["ada", "bob", "cleo", "dan", "eve", "fay"]
    for student in ("ada", "fay"):  # the same solution graded twice: the same, full score
        assert (rows[student]["status"], rows[student]["score"], rows[student]["max"]) == ("graded", "77", "77")
        assert rows[student]["failed_checks"] == ""
    starter = rows["bob"]
    assert starter["status"] == "graded" and float(starter["score"]) < MEDIUM_TOTAL // 2
    assert "api.query_shape" in starter["failed_checks"].split(";")
    assert rows["cleo"]["status"] == "ungradable" and "has no app/main.py" in rows["cleo"]["reason"]
    assert rows["dan"]["status"] == "ungradable" and rows["dan"]["reason"].startswith("timed out")
    assert 75 <= float(rows["dan"]["seconds"]) < 100
    assert rows["eve"]["status"] == "ungradable" and "did not start" in rows["eve"]["reason"]
    assert "SyntaxError" in rows["eve"]["reason"]
    assert all(rows[s]["score"] == "0" and rows[s]["max"] == "77" for s in ("cleo", "dan", "eve"))
    assert seconds < 240, f"the batch took {seconds:.0f} s"


def test_each_student_gets_feedback_and_the_class_a_summary(graded: tuple[Path, str, float]) -> None:
    """A feedback file per student (why, for an ungradable one), summary.txt and the chart, and nothing left running."""
    out, printed, _ = graded
    feedback = out / "feedback"
    assert sorted(p.name for p in feedback.iterdir()) == [
        f"{s}.txt" for s in ("ada", "bob", "cleo", "dan", "eve", "fay")
    ]
    assert "Score: 77/77" in (feedback / "ada.txt").read_text()
    assert "expected:" in (feedback / "bob.txt").read_text()
    assert "SyntaxError" in (feedback / "eve.txt").read_text()
    summary = (out / "summary.txt").read_text()
    assert summary in printed
    assert "6 submissions: 3 graded, 3 ungradable" in summary and "most failed checks (of 3 graded):" in summary
    assert "min 0, median" in summary and "max 77" in summary
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not _processes_under(out.parent)


def test_feedback_in_the_gradescope_format_is_the_grader_s_own(tmp_path: Path) -> None:
    """A report rebuilt from the grader's JSON renders as the grader would (feedback lines, points, skips)."""
    document = {
        "stage": "x",
        "lab": "medium",
        "duration_seconds": 1.0,
        "error": "",
        "log_tail": "",
        "checks": [
            {"id": "api.root", "title": "GET / answers", "points": 1.0, "max_points": 1, "status": "passed"}
            | {"feedback": "", "expected": "", "observed": "", "hint": ""},
            {"id": "api.query", "title": "POST answers", "points": 0.0, "max_points": 2, "status": "failed"}
            | {"feedback": "expected: a\nobserved: b\nlikely cause: c\nlook at: d", "expected": "a", "observed": "b"}
            | {"hint": "d"},
            {"id": "api.docs", "title": "Docs", "points": 0.0, "max_points": 1, "status": "skipped"}
            | {"feedback": "skipped: needs api.query to pass first", "expected": "", "observed": "", "hint": ""},
        ],
    }
    report = batch.report_from_json(document)
    assert [r.feedback for r in report.results] == [c["feedback"] for c in document["checks"]]
    results = json.loads(batch.reporters.render(report, "gradescope"))
    assert results["score"] == 1.0 and [t["max_score"] for t in results["tests"]] == [1, 2, 1]


def test_a_zip_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    """Path traversal and absolute paths in a zip are refused; a single top folder is the one graded."""
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../outside.txt", "gotcha")
    with pytest.raises(ValueError, match="unsafe path"):
        batch.unpack(evil, tmp_path / "into")
    assert not (tmp_path / "outside.txt").exists()
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zipped:
        zipped.writestr("lab/app/main.py", "")
        zipped.writestr("__MACOSX/lab/._main.py", "")
    folder = batch.unpack(good, tmp_path / "good")
    assert folder.name == "lab" and batch.find_stage(tmp_path / "good") == folder


def test_a_bad_zip_is_ungradable_not_fatal(tmp_path: Path) -> None:
    """A file that is not a zip gets its row; the batch goes on."""
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "gus.zip").write_text("not a zip")
    assert batch.main([str(tmp_path / "subs"), "--lab", "medium", "--out", str(tmp_path / "out")]) == 0
    rows = _gradebook(tmp_path / "out")
    assert rows["gus"]["status"] == "ungradable" and "could not be unpacked" in rows["gus"]["reason"]


@pytest.mark.xfail(
    strict=False,
    reason="known bug: a contained stage still starting when the batch is interrupted can outlive it "
    "(seen in a CI rehearsal and by hand: the sandbox's first process, reparented to PID 1, kept serving)",
)
def test_interrupting_the_batch_stops_every_server_it_started(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl+C) to the batch: exit 130 and no stage left running."""
    submissions = tmp_path / "subs"
    _copy("solutions/medium", submissions / "ada")
    command = [sys.executable, "-m", "grader.batch", str(submissions), "--lab", "medium", "--out", str(tmp_path / "o")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        log = tmp_path / "o" / "logs" / "ada.log"
        while "the stage answers on" not in (log.read_text() if log.is_file() else "") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _processes_under(submissions), "the stage never started"  # it runs, and is being graded
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # A contained stage is killed with its sandbox's PID namespace, which the kernel tears down just after.
    deadline = time.monotonic() + 10
    while (left := _processes_under(submissions)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after the batch exited: {left}"


def test_the_batch_shows_its_progress_with_the_time_left(graded: tuple[Path, str, float]) -> None:
    """As each submission is done, the batch prints n of N, the time elapsed and an estimate of the time left."""
    _, printed, _ = graded
    lines = re.findall(r"\[(\d)/6\] elapsed \d+:\d\d, ETA (\d+:\d\d)  (\w+): ", printed)
    assert sorted(done for done, _, _ in lines) == [str(n) for n in range(1, 7)], printed[-2000:]
    assert sorted(student for _, _, student in lines) == ["ada", "bob", "cleo", "dan", "eve", "fay"]
    assert [eta for done, eta, _ in lines if done == "6"] == ["0:00"]
    assert batch.progress(2, 8, 60.0) == "[2/8] elapsed 1:00, ETA 3:00"
