"""The repository's own rules: layout, exact pins, the README's two commands, identical agent copies."""

import filecmp
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stage import ROOT

TOP_LEVEL = ["medium_lab", "advanced_lab", "solutions", "notebooks", "grader", "docker", "noxfile.py", "README.md"]
LAB_TREES = ["solutions/medium", "solutions/advanced", "medium_lab", "advanced_lab"]
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.\[\],-]+)==([^\s;]+)(\s*;.*)?$")


def _stages() -> list[Path]:
    return [ROOT / tree for tree in LAB_TREES if (ROOT / tree / "app" / "main.py").is_file()]


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in _requirement_lines(path):
        match = _REQUIREMENT.match(line)
        assert match, f"{path.relative_to(ROOT)}: {line!r} is not pinned to an exact version"
        pins[match.group(1).split("[")[0].lower()] = match.group(2)
    return pins


def test_top_level_layout() -> None:
    """The fixed top level is all there."""
    assert [name for name in TOP_LEVEL if not (ROOT / name).exists()] == []


def test_every_stage_is_complete() -> None:
    """Each stage has app/main.py, requirements.txt and .env.example (and there is at least one)."""
    stages = _stages()
    assert stages
    for stage in stages:
        assert (stage / "requirements.txt").is_file(), stage
        assert (stage / ".env.example").is_file(), stage


@pytest.mark.parametrize("path", ["tests/requirements.txt", *[f"{t}/requirements.txt" for t in LAB_TREES]])
def test_requirements_are_exact_pins_that_agree(path: str) -> None:
    """Every requirement is pinned with ==, and a lab's pins match the dev environment's."""
    file = ROOT / path
    if not file.exists():
        pytest.skip(f"{path} does not exist yet")
    pins = _pins(file)
    assert pins
    dev = _pins(ROOT / "tests/requirements.txt")
    assert {name: version for name, version in pins.items() if dev.get(name) != version} == {}


def test_agent_copies_are_identical() -> None:
    """app/agent/ is the same, file for file, in every lab tree that has one."""
    copies = [stage / "app" / "agent" for stage in _stages() if (stage / "app" / "agent").is_dir()]
    assert copies
    reference = copies[0]
    names = sorted(p.name for p in reference.glob("*.py"))
    for copy in copies[1:]:
        assert sorted(p.name for p in copy.glob("*.py")) == names, copy
        _, mismatch, errors = filecmp.cmpfiles(reference, copy, names, shallow=False)
        assert mismatch == errors == [], f"{copy.relative_to(ROOT)} differs from {reference.relative_to(ROOT)}"


def _quickstart(name: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- quickstart:{name} -->", 1)[1].split(f"<!-- /quickstart:{name} -->", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("```")]


def test_readme_quickstart_is_two_command_lines_that_make_their_own_environment() -> None:
    """The Quickstart has one demo line and one test line, each creating its own virtual environment."""
    demo, test = _quickstart("demo"), _quickstart("test")
    assert len(demo) == len(test) == 1
    for line in (demo[0], test[0]):
        assert line.startswith("python3 -m venv .venv && ")
        assert re.search(r"nox==\S+ uv==\S+", line), "the bootstrap tools are pinned"
    assert demo[0].endswith("nox -s demo")
    assert re.search(r"nox -s (lint )?tests( sensitivity)?( docker_live)?$", test[0])


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run runs, with CI=true, exactly the line that .ci/readme-command takes from the README."""
    script = (ROOT / ".ci" / "run").read_text()
    assert "export CI=true" in script
    assert "command=$(.ci/readme-command test)" in script
    assert 'eval "$command"' in script
    extracted = subprocess.run(
        [str(ROOT / ".ci" / "readme-command"), "test"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert extracted == _quickstart("test")[0]


def test_env_example_documents_every_setting() -> None:
    """Each stage's .env.example names exactly the variables its Settings reads."""
    for stage in _stages():
        fields = subprocess.run(
            [sys.executable, "-c", "from app.config import Settings; print(*Settings.model_fields)"],
            cwd=stage,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (stage / ".env.example").read_text(), re.M))
        assert documented == {name.upper() for name in fields}, stage.relative_to(ROOT)


def test_nothing_generated_or_secret_is_tracked() -> None:
    """No virtual environment, cache, database or .env file is committed."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    bad = [
        path
        for path in tracked.splitlines()
        if re.search(r"(^|/)(\.venv|\.nox|__pycache__|\.mypy_cache|\.ruff_cache)/|\.db$|(^|/)\.env$", path)
    ]
    assert bad == []
