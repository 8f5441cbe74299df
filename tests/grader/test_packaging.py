"""The Gradescope bundle run against a fake /autograder, and the GitHub Classroom workflow and its result."""

import base64
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from grader import gradescope_bundle
from grader.github import classroom_result
from tests.support.stage import ROOT

WORKFLOW = ROOT / "grader" / "github" / "classroom.yml"
IGNORE = shutil.ignore_patterns("__pycache__", ".venv", ".pytest_cache", "*.db", ".env")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return gradescope_bundle.build("medium", tmp_path_factory.mktemp("build"))


def test_the_bundle_holds_the_scripts_the_pins_and_the_grader(bundle: Path, tmp_path: Path) -> None:
    """setup.sh and run_autograder (executable, the lab pinned), the lab's pins, the grader; rebuilt identically."""
    with zipfile.ZipFile(bundle) as zipped:
        names = set(zipped.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in zipped.infolist()}
        script = zipped.read("run_autograder").decode()
        pins = zipped.read("requirements.txt").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "grader/__main__.py", "grader/checks/load.py"} <= names
    assert not any("__pycache__" in name or name.startswith("grader/gradescope/") for name in names)
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert "lab=${GRADER_LAB:-medium}" in script
    assert pins == (ROOT / "solutions/medium/requirements.txt").read_text() and "httpx==" in pins
    assert gradescope_bundle.build("medium", tmp_path).read_bytes() == bundle.read_bytes()


def test_the_advanced_bundle_adds_locust_and_what_it_needs_pinned_as_in_the_dev_pins() -> None:
    """The advanced lab's load test runs Locust, which its runtime pins lack: the bundle adds it, exactly pinned."""
    lab = (ROOT / "solutions/advanced/requirements.txt").read_text()
    pins = gradescope_bundle.requirements("advanced")
    added = pins.removeprefix(lab.rstrip() + "\n").splitlines()
    assert pins.startswith(lab.rstrip()) and added[0].startswith("# What the grader runs")
    dev = set((ROOT / "tests/requirements.txt").read_text().splitlines())
    assert {"locust==", "gevent==", "flask=="} <= {line.split("==")[0] + "==" for line in added[1:]}
    assert all(line in dev for line in added[1:]), "every added pin is the dev environment's own line"
    assert gradescope_bundle.requirements("medium") == (ROOT / "solutions/medium/requirements.txt").read_text()


def _autograde(bundle: Path, root: Path, stage: Path) -> dict[str, Any]:
    """Unpack the bundle as Gradescope does (source/), put the stage under submission/, run run_autograder."""
    with zipfile.ZipFile(bundle) as zipped:
        zipped.extractall(root / "source")
    shutil.copytree(stage, root / "submission" / "my_lab", ignore=IGNORE)  # a student uploading the folder itself
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "GRADER_PYTHON": sys.executable, "GRADER_SKIP_INSTALL": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    result = subprocess.run(
        ["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document: dict[str, Any] = json.loads((root / "results" / "results.json").read_text())
    return document


def test_run_autograder_gives_the_solution_full_marks(bundle: Path, tmp_path: Path) -> None:
    """results.json in Gradescope's shape, with every test at its full points."""
    document = _autograde(bundle, tmp_path / "autograder", ROOT / "solutions/medium")
    assert document["score"] == 77 and document["visibility"] == "visible"
    assert len(document["tests"]) == 44
    for test in document["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["score"] == test["max_score"] and test["status"] == "passed"


def test_run_autograder_reports_an_ungradable_submission(bundle: Path, tmp_path: Path) -> None:
    """A syntax error: exit 0 for Gradescope, score 0, and the reason in the output."""
    stage = tmp_path / "broken"
    shutil.copytree(ROOT / "solutions/medium", stage, ignore=IGNORE)
    (stage / "app" / "main.py").write_text("def oops(:\n")
    document = _autograde(bundle, tmp_path / "autograder", stage)
    assert document["score"] == 0 and "did not start" in document["output"] and "SyntaxError" in document["output"]


def test_the_workflow_is_a_valid_github_workflow() -> None:
    """check-jsonschema's built-in GitHub workflow schema accepts the template."""
    checker = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    result = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflow_feeds_the_reporter_the_grader_s_result() -> None:
    """The grade step's id is the reporter's runner, and its `<RUNNER>_RESULTS` variable carries that output."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    assert job["name"] == "Autograding Tests"
    steps = {step.get("id"): step for step in job["steps"]}
    reporter = next(step for step in job["steps"] if "autograding-grading-reporter" in step.get("uses", ""))
    runner = reporter["with"]["runners"]
    assert runner in steps and "grader.github.classroom_result" in steps[runner]["run"]
    assert reporter["env"][f"{runner.upper()}_RESULTS"] == f"${{{{ steps.{runner}.outputs.result }}}}"
    assert "--format json --output grade.json" in steps[runner]["run"]


def _decode(line: str) -> dict[str, Any]:
    assert line.startswith("result=") and "\n" not in line
    decoded: dict[str, Any] = json.loads(base64.b64decode(line.removeprefix("result=")))
    return decoded


def test_the_classroom_result_carries_points_per_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """version, status, max_score, and one test per check whose scores add up to the grade."""
    checks = [
        {"id": "api.root", "title": "GET /", "points": 1.0, "max_points": 1, "status": "passed", "feedback": ""},
        {"id": "api.query", "title": "POST", "points": 0.5, "max_points": 2, "status": "failed", "feedback": "x"},
    ]
    report = tmp_path / "grade.json"
    report.write_text(json.dumps({"max_score": 3, "error": "", "checks": checks}))
    assert classroom_result.main([str(report)]) == 0
    result = _decode(capsys.readouterr().out.strip())
    assert (result["version"], result["status"], result["max_score"]) == (1, "fail", 3)
    assert [(t["status"], t["score"]) for t in result["tests"]] == [("pass", 1.0), ("fail", 0.5)]
    assert result["tests"][1]["message"] == "x"


def test_an_ungradable_or_missing_report_is_an_error_out_of_the_lab_s_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No report, or a stage that did not start: status error, 0 out of --max-score, and why."""
    assert classroom_result.main([str(tmp_path / "nothing.json"), "--max-score", "77"]) == 0
    result = _decode(capsys.readouterr().out.strip())
    assert (result["status"], result["max_score"], result["tests"][0]["score"]) == ("error", 77, 0)
    report = tmp_path / "grade.json"
    report.write_text(
        json.dumps({"max_score": 0, "error": "the stage did not start", "log_tail": "Boom", "checks": []})
    )
    classroom_result.main([str(report), "--max-score", "77"])
    result = _decode(capsys.readouterr().out.strip())
    assert result["status"] == "error" and result["tests"][0]["message"] == "the stage did not start\nBoom"
