"""The notebooks: committed without outputs, each pointed at a stage by one variable, and run top to bottom."""

import importlib.util
import re
import shutil
from pathlib import Path
from types import ModuleType

import nbformat
import pytest

from tests.support.services import unavailable
from tests.support.stage import ROOT


def _load_runner() -> ModuleType:
    """notebooks/_run.py, which `nox -s notebooks` runs as a script (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("notebook_runner", ROOT / "notebooks" / "_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
NOTEBOOKS: list[Path] = runner.notebooks()
# What an executed notebook must show besides running cleanly: (output types, printed snippets).
MUST_SHOW: dict[str, tuple[set[str], list[str]]] = {
    "01_medium_walkthrough.ipynb": ({"image/png"}, ["s  token  'Server-Sent '", "s  done ", "s  error  "]),
    "02_advanced_walkthrough.ipynb": (
        {"image/png"},
        ["expired 5 minutes ago: 401", "403 Forbidden", "X-Cache HIT", "429 Too Many Requests", "not in the log"],
    ),
    # MET or FAILED: the verdict of a 15 s run on a busy machine is the notebook's to read, not this test's.
    "03_load_testing.ipynb": ({"image/png"}, ["LOAD BUDGET ", "Locust's exit code: "]),
}
# What a notebook shows only with redis-server installed; without it, that section says it is skipped.
WITH_REDIS_SERVER: dict[str, list[str]] = {
    "02_advanced_walkthrough.ipynb": ["/health: degraded  (redis down", "/health: healthy  (redis up"],
}
_STAGE_LINE = re.compile(r'^STAGE = os\.environ\.get\("LAB_STAGE", "[^"]+"\)', re.MULTILINE)


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


def test_there_are_notebooks() -> None:
    """The notebooks folder holds at least the two walkthroughs and the load test."""
    expected = {"01_medium_walkthrough.ipynb", "02_advanced_walkthrough.ipynb", "03_load_testing.ipynb"}
    assert expected <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_carries_no_outputs(path: Path) -> None:
    """A committed notebook is valid and clean: no outputs, execution counts or timings (the build folder has those)."""
    nb = runner.read(path)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    dirty = [cell.get("id") for cell in code if cell.outputs or cell.execution_count or "execution" in cell.metadata]
    assert dirty == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_names_its_stage_at_the_top(path: Path) -> None:
    """The first cell names STAGE; the first code cell sets it, from LAB_STAGE when that is set."""
    nb = runner.read(path)
    first_code = next(cell for cell in nb.cells if cell.cell_type == "code")
    assert "`STAGE`" in nb.cells[0].source
    assert _STAGE_LINE.search(first_code.source), first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell runs without an error against the real service, and the notebook shows what it promises."""
    monkeypatch.delenv("LAB_STAGE", raising=False)  # the repository's tests run the notebooks' own default stages
    executed = runner.execute(path, tmp_path)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert [cell.get("id") for cell in code if cell.execution_count is None] == []
    outputs = [output for cell in code for output in cell.outputs]
    assert [output for output in outputs if output.output_type == "error"] == []
    shown = {kind for output in outputs for kind in output.get("data", {})}
    text = "".join(output.get("text", "") for output in outputs)
    kinds, snippets = MUST_SHOW.get(path.name, (set(), []))
    assert kinds <= shown
    assert [snippet for snippet in snippets if snippet not in text] == []
    assert (tmp_path / path.name).is_file()
    if path.name in WITH_REDIS_SERVER:
        if shutil.which("redis-server") is None:
            unavailable(f"redis-server is not installed, so {path.name} skipped its Redis section")
        assert [snippet for snippet in WITH_REDIS_SERVER[path.name] if snippet not in text] == []
