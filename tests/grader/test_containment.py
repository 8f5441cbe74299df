"""Hostile submissions (tests/grader/hostile/): each is graded, and the sandbox contains what it attempts.

Each test asserts the score the honest checks give, that nothing leaked, and that nothing the stage started is
left running. The limits are small here (GRADER_LIMITS) so that the fork bomb, the memory hog and the disk filler
hit them at once; each hostile loop is capped on its own too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from grader import sandbox
from grader.__main__ import main
from grader.core import Report
from grader.sandbox import bwrap, cgroups, workspace
from tests.support.grading import grade_stage
from tests.support.services import unavailable
from tests.support.stage import ROOT

HOSTILE = Path(__file__).with_name("hostile")
SMALL = "memory=256M,address_space=4G,processes=64,disk=64M,file_size=32M"
HEALTH_AND_ROOT = ("api.health", "api.root")

pytestmark = [pytest.mark.timeout(240), pytest.mark.skipif(os.name != "posix", reason="Linux containment")]


@pytest.fixture(autouse=True)
def _small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADER_LIMITS", SMALL)
    monkeypatch.delenv("GRADER_SANDBOX", raising=False)


def _require(*, namespaces: bool = True, groups: bool = False) -> None:
    """Skip (fail in CI) where this machine cannot give the guarantee a test proves."""
    if namespaces and (problem := bwrap.problem()):
        unavailable(f"no namespaces for the stage: {problem}")
    if groups and not cgroups.available():
        unavailable("no writable cgroup v1 memory and pids hierarchies (root on cgroup v1)")


def _hostile(name: str, tmp_path: Path, **targets: object) -> tuple[Path, str]:
    """A copy of the hostile stage with the medium lab's requirements and its targets; and its token."""
    stage = tmp_path / name
    shutil.copytree(HOSTILE / name, stage)
    shutil.copy(ROOT / "solutions" / "medium" / "requirements.txt", stage / "requirements.txt")
    token = f"hostile-{secrets.token_hex(8)}"
    (stage / "app" / "targets.json").write_text(json.dumps({"token": token, **targets}))
    return stage, token


def _running(token: str) -> list[int]:
    """The processes whose command line carries the token (the hostile stage's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _left_by_this_grader() -> list[str]:
    """Control groups and workspaces of this process's stages that still exist."""
    pid = os.getpid()
    left = [str(path) for path in Path(tempfile.gettempdir()).glob(f"{workspace.PREFIX}{pid}-*")]
    for controller in cgroups.CONTROLLERS:
        own = cgroups._own(controller)
        if own is not None:
            left += [str(path) for path in own.glob(f"grader-stage-{pid}-*")]
    return left


def _assert_nothing_left(token: str = "") -> None:
    deadline = time.monotonic() + 5  # the kernel reaps a killed group within moments
    while (token and _running(token)) or _left_by_this_grader():
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not (token and _running(token)), f"processes of the stage are still running: {_running(token)}"
    assert _left_by_this_grader() == []


def _passed(report: Report) -> set[str]:
    return {result.check.id for result in report.results if result.status == "passed"}


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server of the test's on 127.0.0.1, and what any connection to it sent."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                received.append(conn.recv(1024))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join(5)
    server.close()


def _outside(folder: Path) -> list[str]:
    """`folder`, unless it is the temp folder: the stage has a /tmp of its own, which holds the mount points of
    its copy and its data folders (a course checked out in /tmp has /tmp as its parent)."""
    return [] if folder.resolve() == Path(tempfile.gettempdir()).resolve() else [str(folder)]


def test_a_stage_cannot_read_the_graders_files_or_write_outside_its_folders(tmp_path: Path) -> None:
    """The grader's source, the test's secret and the original submission are out of reach; it gets 2/2."""
    _require()
    secret = tmp_path / "secret.txt"
    secret.write_text(secrets.token_hex(16))
    secret.chmod(0o644)
    targets = {
        "read": [str(ROOT / "grader" / "core.py"), str(secret), str(ROOT / ".git" / "config"), "/proc/1/environ"],
        "list": [str(ROOT), *_outside(ROOT.parent), str(ROOT / "grader")],
        "write": [str(tmp_path / "pwned"), str(tmp_path / "reads_files.pwned")],
    }
    stage, token = _hostile("reads_files", tmp_path, **targets)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert report.error == "", report.log_tail
    assert (report.score, report.max_score) == (2, 2)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "reads_files.pwned").exists()
    _assert_nothing_left(token)


def test_a_stage_has_no_network_but_its_own_loopback(tmp_path: Path, listener: tuple[int, list[bytes]]) -> None:
    """No connection reaches a server of the machine (the test's, Redis, PostgreSQL) or the internet."""
    _require()
    port, received = listener
    connect = [["127.0.0.1", port], ["127.0.0.1", 6379], ["127.0.0.1", 5432], ["1.1.1.1", 443]]
    stage, token = _hostile("outbound", tmp_path, connect=connect)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert report.error == "", report.log_tail
    assert (report.score, report.max_score) == (2, 2)
    assert received == []
    _assert_nothing_left(token)


def test_a_process_left_behind_cannot_forge_the_report(tmp_path: Path) -> None:
    """A process the stage leaves to overwrite the results file is gone before the grader writes it."""
    _require()
    results = tmp_path / "results.json"
    stage, token = _hostile("overwrites_results", tmp_path, results=str(results))
    only = ",".join(HEALTH_AND_ROOT)
    assert main([str(stage), "--lab", "medium", "--only", only, "--format", "json", "--output", str(results)]) == 0
    time.sleep(2)  # the forger polled every 50 ms: it would have written by now
    report = json.loads(results.read_text())
    assert (report["score"], report["max_score"]) == (2, 2)
    _assert_nothing_left(token)


def test_nothing_the_stage_started_outlives_its_grade(tmp_path: Path) -> None:
    """An orphan in its own session that ignores SIGTERM is ended with the stage."""
    _require(namespaces=False)
    stage, token = _hostile("left_behind", tmp_path)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert (report.score, report.max_score) == (2, 2), report.error
    _assert_nothing_left(token)


def test_an_interrupted_grader_leaves_no_stage_running(tmp_path: Path) -> None:
    """SIGTERM to the grader while its stages run: every process they started, and their sandboxes, are gone."""
    _require(namespaces=False)
    stage, token = _hostile("left_behind", tmp_path)
    command = [sys.executable, "-m", "grader", str(stage), "--lab", "medium"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    grader = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert grader.stderr is not None
        deadline = time.monotonic() + 120
        while "the stage answers on" not in grader.stderr.readline() and time.monotonic() < deadline:
            pass
        assert _running(token), "the stage's orphan never started"
        grader.send_signal(signal.SIGTERM)
        assert grader.wait(timeout=60) == 130
    finally:
        if grader.poll() is None:
            grader.kill()
            grader.wait()
        if grader.stderr is not None:
            grader.stderr.close()
    deadline = time.monotonic() + 10
    while _running(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running(token) == []
    assert list(Path(tempfile.gettempdir()).glob(f"{workspace.PREFIX}{grader.pid}-*")) == []


def test_a_fork_bomb_is_held_by_the_pids_limit(tmp_path: Path) -> None:
    """A fork bomb at import meets the pids limit (which binds root): ungradable, with the limit named."""
    _require(groups=True)
    stage, token = _hostile("fork_bomb", tmp_path)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert report.exit_code == 2
    assert "fork refused" in report.log_tail, report.log_tail
    assert "more than 64 processes" in report.log_tail
    _assert_nothing_left(token)


def test_a_memory_hog_is_stopped_at_the_memory_limit(tmp_path: Path) -> None:
    """Allocating without bound at import: killed at 256 MiB, ungradable, the limit named in the feedback."""
    _require(groups=True)
    stage, token = _hostile("memory_hog", tmp_path)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert report.exit_code == 2
    assert "LEAKED" not in report.log_tail
    assert "the service used more than 256 MiB of memory" in report.log_tail, report.log_tail
    _assert_nothing_left(token)


def test_a_limit_broken_during_a_check_is_named_in_its_feedback(tmp_path: Path) -> None:
    """A stage killed for memory in the middle of a check fails it with the limit as the likely cause."""
    _require(groups=True)
    stage, token = _hostile("memory_on_request", tmp_path)
    report = grade_stage(stage, "medium", ("api.root",))
    assert report.error == ""
    [result] = report.results
    assert (result.check.id, result.status) == ("api.root", "failed")
    assert result.cause == "the service used more than 256 MiB of memory", result.feedback
    _assert_nothing_left(token)


def test_where_a_layer_is_missing_one_line_says_which(tmp_path: Path) -> None:
    """Without bubblewrap on PATH the grade still runs, and one line on stderr names the missing guarantees."""
    stage, _ = _hostile("answers_everything", tmp_path)
    env = {**os.environ, "PATH": "/nonexistent", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "grader", str(stage), "--lab", "medium", "--only", "api.health"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, check=False)
    lines = [line for line in done.stderr.splitlines() if "containment is partial here" in line]
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lines) == 1, done.stderr[-2000:]
    assert "no namespaces (bubblewrap (bwrap) is not installed)" in lines[0]


def test_a_disk_filler_is_stopped_at_the_disk_limit(tmp_path: Path) -> None:
    """Writing files without bound: stopped past 64 MiB, ungradable, the limit named; its files are gone."""
    _require(namespaces=False)
    stage, token = _hostile("disk_filler", tmp_path)
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert report.exit_code == 2
    assert "LEAKED" not in report.log_tail
    assert "the service wrote more than 64 MiB to disk" in report.log_tail, report.log_tail
    assert not list(stage.glob("fill-*"))  # it wrote in its private copy only
    _assert_nothing_left(token)


def test_a_stage_that_hangs_after_start_up_fails_its_check_and_is_killed(tmp_path: Path) -> None:
    """A stage whose loop blocks after its first answer: the check times out, SIGKILL ends it, the grade ends."""
    _require(namespaces=False)
    stage, token = _hostile("hangs", tmp_path)
    started = time.monotonic()
    report = grade_stage(stage, "medium", ("api.root",))
    assert [(result.check.id, result.status) for result in report.results] == [("api.root", "failed")]
    assert "within 20 s" in report.results[0].expected
    assert time.monotonic() - started < 120  # the check's 20 s and the stop's 10 s, far from the hour
    _assert_nothing_left(token)


def test_answering_200_to_everything_earns_only_what_the_honest_checks_give(tmp_path: Path) -> None:
    """One valid-looking body on every path and method passes the checks that only look at such a body."""
    _require(namespaces=False)
    stage, token = _hostile("answers_everything", tmp_path)
    report = grade_stage(stage, "medium", ("api", "errors"))
    assert report.error == ""
    assert _passed(report) == set(HEALTH_AND_ROOT), {r.check.id: r.status for r in report.results}
    assert report.score == 2
    _assert_nothing_left(token)


def test_the_sandbox_can_be_turned_off_for_trusted_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRADER_SANDBOX=0 is the only way a stage runs uncontained."""
    assert sandbox.enabled()
    monkeypatch.setenv("GRADER_SANDBOX", "0")
    assert not sandbox.enabled()


def test_a_course_checked_out_under_the_temp_folder_stays_the_grader_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage inside a folder under /tmp (a course cloned there, or the stages the ladder writes), graded from
    that folder (its PWD and tool paths in the environment), is graded without that folder, or any file of the
    original, being handed to the stage's user."""
    if os.geteuid() != 0:
        pytest.skip("only root hands folders to a user of the stage's own")
    course = tmp_path / "course"
    stage = course / "solutions" / "medium"
    shutil.copytree(ROOT / "solutions" / "medium", stage, ignore=shutil.ignore_patterns("__pycache__", "*.db"))
    (course / "README.md").write_text("the course\n")
    monkeypatch.setenv("PWD", str(course))  # the stage's environment starts from the grader's
    monkeypatch.setenv("COURSE_TOOLS", str(course / "solutions"))
    report = grade_stage(stage, "medium", HEALTH_AND_ROOT)
    assert [r.status for r in report.results] == ["passed", "passed"], [r.feedback for r in report.results]
    handed = [p for p in [course, *course.rglob("*")] if p.lstat().st_uid != os.geteuid()]
    assert not handed, f"handed to the stage's user: {[str(p.relative_to(tmp_path)) for p in handed[:5]]}"
