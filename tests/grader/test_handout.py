"""The handout holds what a student needs and no answer: no solution file, region or line, even in its grader."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest
import yaml

from grader import handout, starters
from tests.support.stage import ROOT

# A solution line this long is an answer, not an idiom that a starter line could share by chance.
ANSWER_MIN_LENGTH = 25
# Solution lines the contract itself states, so the grader's feedback may name them: the image's command.
CONTRACT_LINES = frozenset({'CMD ["python", "-m", "app.serve"]'})


@pytest.fixture(scope="module", params=[lab.name for lab in starters.LABS])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[starters.Lab, Path]:
    lab = next(lab for lab in starters.LABS if lab.name == request.param)
    return lab, handout.build(lab.name, tmp_path_factory.mktemp("handout"))


def _texts(folder: Path) -> dict[str, str]:
    """Every file of the handout as text, the wheel's members included (as `wheel!member`)."""
    texts = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                texts |= {f"{name}!{m}": wheel.read(m).decode("utf-8", "replace") for m in wheel.namelist()}
        else:
            texts[name] = path.read_bytes().decode("utf-8", "replace")
    return texts


def _answers(lab: starters.Lab) -> set[str]:
    """Every line the solution's TODO regions hold and its starter does not: the answers."""
    solution = {
        p: f.content.decode("utf-8", "replace") for p, f in starters.render(ROOT / lab.solution, only=()).items()
    }
    starter = {p: f.content.decode("utf-8", "replace") for p, f in starters.render(ROOT / lab.solution).items()}
    starter_lines = {line.strip() for text in starter.values() for line in text.splitlines()}
    return {
        line.strip()
        for path, text in solution.items()
        for line in text.splitlines()
        if len(line.strip()) >= ANSWER_MIN_LENGTH and line.strip() not in starter_lines and path in starter
    } - CONTRACT_LINES


def test_the_handout_holds_the_starter_its_sheet_the_checks_and_the_grader(built: tuple[starters.Lab, Path]) -> None:
    """The starter's files and sheet, CHECKS.md with every check, the workflow, and the grader's wheel and pins."""
    lab, folder = built
    listed = subprocess.run(["git", "ls-files", lab.starter], cwd=ROOT, capture_output=True, text=True, check=True)
    committed = {PurePosixPath(name).relative_to(lab.starter).as_posix() for name in listed.stdout.split()}
    present = {p.relative_to(folder / lab.starter).as_posix() for p in (folder / lab.starter).rglob("*") if p.is_file()}
    assert committed <= present, sorted(committed - present)
    assert (folder / lab.starter / "README.md").read_text() == (ROOT / lab.starter / "README.md").read_text()
    front = (folder / "README.md").read_text()
    assert handout.SETUP in front and f".venv/bin/nox -s grade -- {lab.starter}" in front
    checks_md = (folder / "CHECKS.md").read_text()
    listed = subprocess.run(
        [sys.executable, "-m", "grader", "--list", "--lab", lab.name], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert re.search(r"^(\d+) points in (\d+) checks", listed.splitlines()[-1])
    total, count = re.findall(r"(\d+) points in (\d+) checks", listed)[-1]
    assert f"{total} points in {count} checks" in checks_md
    assert checks_md.count("| `") == int(count)
    assert (
        (folder / ".grader" / "requirements.txt")
        .read_text()
        .startswith((ROOT / lab.solution / "requirements.txt").read_text().rstrip())
    )
    assert [p.name for p in (folder / ".grader").glob("*.whl")] == [f"{handout.DIST_NAME}-0.1.0-py3-none-any.whl"]


def test_no_solution_file_region_or_line_is_in_the_handout(built: tuple[starters.Lab, Path]) -> None:
    """No solution-only file, no marker, and none of the solution's answer lines, in any file or in the wheel."""
    lab, folder = built
    texts = _texts(folder)
    for only in starters.SOLUTION_ONLY - starters.STARTER_OWNED:
        assert not (folder / only).exists(), only
    assert not [name for name, text in texts.items() if "BEGIN SOLUTION" in text or "END SOLUTION" in text]
    answers = _answers(lab)
    assert len(answers) > 20, "the check needs answers to look for"
    found = {(name, answer) for name, text in texts.items() for answer in answers if answer in text}
    assert not found, sorted(found)[:10]
    assert not [name for name, text in texts.items() if name.endswith(".md") and "solutions/" in text]


def test_the_workflow_installs_the_grader_from_the_handout_and_checks_out_nothing_else(
    built: tuple[starters.Lab, Path],
) -> None:
    """One checkout (the student's own repository), the grader from .grader/, and the lab's own total."""
    lab, folder = built
    workflow = yaml.safe_load((folder / ".github/workflows/classroom.yml").read_text())
    steps = next(iter(workflow["jobs"].values()))["steps"]
    checkouts = [step for step in steps if str(step.get("uses", "")).startswith("actions/checkout")]
    assert len(checkouts) == 1 and "with" not in checkouts[0]
    runs = "\n".join(str(step.get("run", "")) for step in steps)
    assert ".grader/requirements.txt .grader/*.whl" in runs and "nox" not in runs
    assert workflow["env"]["LAB"] == lab.name and workflow["env"]["STAGE"] == lab.starter
    total = sum(check.points for check in handout.select(lab.name))  # type: ignore[arg-type]
    assert workflow["env"]["LAB_MAX_SCORE"] == str(total)


def test_the_wheel_installs_alone_and_runs_the_grader(built: tuple[starters.Lab, Path], tmp_path: Path) -> None:
    """In a new virtual environment with nothing but the wheel and httpx, `python -m grader --list` works."""
    lab, folder = built
    uv = shutil.which("uv") or shutil.which("uv", path=str(ROOT / ".venv" / "bin"))
    if lab.name != "medium" or uv is None:
        pytest.skip("one install is enough" if uv else "uv is not installed")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    httpx_pin = next(
        line for line in (ROOT / "tests/requirements.txt").read_text().splitlines() if line.startswith("httpx==")
    )
    wheel = next((folder / ".grader").glob("*.whl"))
    subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(python), str(wheel), httpx_pin], check=True, timeout=300
    )
    result = subprocess.run(
        [str(python), "-m", "grader", "--list", "--lab", "medium"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "77 points in" in result.stdout
    imported = subprocess.run(
        [str(python), "-c", "import grader.starters"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert imported.returncode != 0, "the instructor's tools are not in the wheel"


def test_the_wheel_is_reproducible(tmp_path: Path) -> None:
    """The same sources give the same wheel, byte for byte, and its RECORD lists every member."""
    first, second = handout.build_wheel(tmp_path / "a"), handout.build_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(io.BytesIO(first.read_bytes())) as wheel:
        names = set(wheel.namelist())
        record = wheel.read(f"{handout.DIST_NAME}-0.1.0.dist-info/RECORD").decode()
    assert {line.split(",")[0] for line in record.splitlines()} == names
    assert "grader/__main__.py" in names and "grader/github/classroom_result.py" in names


def test_the_sheet_s_commands_work_in_the_handout(built: tuple[starters.Lab, Path]) -> None:
    """Every `.venv/bin/nox -s TASK` the lab sheet gives is a task of the handout's own noxfile, for its folder."""
    lab, folder = built
    sheet = (folder / lab.starter / "README.md").read_text()
    tasks = set(re.findall(r"\.venv/bin/nox -s (\w+) -- " + re.escape(lab.starter), sheet))
    assert tasks >= {"serve", "grade"}, tasks
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "--list", "-f", str(folder / "noxfile.py")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    offered = set(re.findall(r"^\* (\w+)", listed.stdout, re.MULTILINE))
    assert tasks <= offered, (tasks, offered)
