"""The starter generator (grader/starters.py): its markers and errors, and the medium starter it generates."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.support.stage import ROOT, run_stage

# `grader` is a top-level package of the repository, but pytest puts only the test packages on the path.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from grader import starters
from grader.starters import MarkerError

MEDIUM_SOLUTION = ROOT / "solutions" / "medium"
MEDIUM_STARTER = ROOT / "medium_lab"
MARKER_WORDS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN STARTER", "END STARTER")


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A small solution tree under `root` with the files given (dedented)."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(text))
    return root


def _render(text: str, path: str = "app/module.py", only: set[int] | None = None) -> str:
    return starters.render_text(textwrap.dedent(text), path, only)


# --- markers ---------------------------------------------------------------------------------------------

SOURCE = """\
    import math


    def area(radius: float) -> float:
        \"\"\"The area of a circle.\"\"\"
        # BEGIN SOLUTION TODO 1: compute the area
        return math.pi * radius**2
        # END SOLUTION


    class Shape:
        # BEGIN SOLUTION TODO 2: name the shape
        name: str = "circle"
        # BEGIN STARTER
        # name: str
        # END STARTER
        # END SOLUTION

        def describe(self) -> str:
            # BEGIN SOLUTION TODO 3: describe it
            if self.name:
                return f"a {self.name}"
            # BEGIN STARTER
            # if self.name:
            #     return "?"
            #
            # END STARTER
            # END SOLUTION
            return "nothing"
    """


def test_parse_finds_each_region_with_its_todo_and_starter_block() -> None:
    """parse() returns the regions in order: number, title, BEGIN line, solution lines, STARTER lines."""
    regions = starters.parse(textwrap.dedent(SOURCE), "app/module.py")
    assert [(r.todo.number, r.todo.title, r.todo.line) for r in regions] == [
        (1, "compute the area", 6),
        (2, "name the shape", 12),
        (3, "describe it", 20),
    ]
    assert regions[0].solution == ("    return math.pi * radius**2\n",)
    assert regions[0].starter is None
    assert regions[1].starter == ("name: str",)
    assert regions[2].starter == ("if self.name:", '    return "?"', "")
    assert str(regions[2].todo) == "TODO 3: describe it"


def test_default_replacement_raises_in_a_function_and_starter_blocks_keep_relative_indentation() -> None:
    """In a function the default is the prompt and a NotImplementedError; STARTER lines sit at the BEGIN indent."""
    assert _render(SOURCE) == textwrap.dedent(
        """\
        import math


        def area(radius: float) -> float:
            \"\"\"The area of a circle.\"\"\"
            # TODO 1: compute the area
            raise NotImplementedError("TODO 1: compute the area")


        class Shape:
            # TODO 2: name the shape
            name: str

            def describe(self) -> str:
                # TODO 3: describe it
                if self.name:
                    return "?"

                return "nothing"
        """
    )


def test_default_replacement_outside_a_function_is_the_prompt_alone() -> None:
    """At module or class level, and in files other than Python, the default is only the prompt."""
    module = """\
        # BEGIN SOLUTION TODO 1: choose the limit
        LIMIT = 10
        # END SOLUTION
        if LIMIT:
            # BEGIN SOLUTION TODO 2: not a function body, though indented
            LIMIT += 1
            # END SOLUTION
            pass
        """
    assert (
        _render(module)
        == "# TODO 1: choose the limit\nif LIMIT:\n    # TODO 2: not a function body, though indented\n    pass\n"
    )
    dockerfile = """\
        FROM python:3.11-slim
        # BEGIN SOLUTION TODO 3: run as a user without privileges
        USER app
        # END SOLUTION
        CMD ["uvicorn", "app.main:app"]
        """
    rendered = _render(dockerfile, "Dockerfile")
    assert (
        rendered
        == 'FROM python:3.11-slim\n# TODO 3: run as a user without privileges\nCMD ["uvicorn", "app.main:app"]\n'
    )


def test_a_dockerfile_region_is_a_todo_of_the_tree_and_its_starter_block_may_leave_comments(tmp_path: Path) -> None:
    """A Dockerfile (no .py suffix) is numbered with the Python files; its STARTER lines stay comments when written
    as `# # ...`, no NotImplementedError is added, and dotfiles without markers are copied as they are."""
    solution = _tree(
        tmp_path,
        {
            "app/main.py": "# BEGIN SOLUTION TODO 1: the app\napp = None\n# END SOLUTION\n",
            "Dockerfile": """\
                FROM python:3.11-slim
                # BEGIN SOLUTION TODO 2: serve as a user without privileges
                USER 10001:10001
                CMD ["python", "-m", "app.serve"]
                # BEGIN STARTER
                # # USER, then CMD in exec form
                # END STARTER
                # END SOLUTION
                """,
            ".dockerignore": "*\n!app\n",
        },
    )
    assert [(todo.number, todo.path, todo.line) for todo in starters.todos(solution)] == [
        (1, "app/main.py", 1),
        (2, "Dockerfile", 2),
    ]
    files = starters.render(solution)
    dockerfile = files["Dockerfile"].content.decode()
    assert (
        dockerfile
        == "FROM python:3.11-slim\n# TODO 2: serve as a user without privileges\n# USER, then CMD in exec form\n"
    )
    assert files[".dockerignore"].content == b"*\n!app\n"
    assert "USER 10001" in starters.render(solution, only={1})["Dockerfile"].content.decode()


def test_render_with_only_replaces_just_the_chosen_todos_and_removes_every_marker() -> None:
    """With `only`, the other regions keep their solution code; no marker line remains either way."""
    rendered = _render(SOURCE, only={3})
    assert "return math.pi * radius**2" in rendered
    assert 'name: str = "circle"' in rendered
    assert "# TODO 3: describe it" in rendered and 'return f"a {self.name}"' not in rendered
    assert not any(word in rendered for word in MARKER_WORDS)
    solution = _render(SOURCE, only=set())
    assert "# TODO" not in solution and not any(word in solution for word in MARKER_WORDS)


def test_titles_with_quotes_become_valid_formatted_python() -> None:
    """A title with double quotes is written with single quotes, as ruff's formatter would."""
    rendered = _render('def f() -> None:\n    # BEGIN SOLUTION TODO 1: say "hi"\n    print("hi")\n    # END SOLUTION\n')
    assert "raise NotImplementedError('TODO 1: say \"hi\"')" in rendered
    ast.parse(rendered)


def test_line_endings_are_kept() -> None:
    """A file with CRLF endings gets CRLF starter lines."""
    text = "def f() -> int:\r\n    # BEGIN SOLUTION TODO 1: one\r\n    return 1\r\n    # END SOLUTION\r\n"
    rendered = starters.render_text(text, "app/module.py")
    assert rendered == 'def f() -> int:\r\n    # TODO 1: one\r\n    raise NotImplementedError("TODO 1: one")\r\n'


BROKEN = {
    "unpaired BEGIN": ("x = 1\n# BEGIN SOLUTION TODO 1: a\ny = 2\n", 2, "has no END SOLUTION"),
    "END without BEGIN": ("x = 1\n# END SOLUTION\n", 2, "END SOLUTION without a BEGIN SOLUTION"),
    "nested BEGIN": (
        "# BEGIN SOLUTION TODO 1: a\n# BEGIN SOLUTION TODO 2: b\n# END SOLUTION\n# END SOLUTION\n",
        2,
        "regions do not nest",
    ),
    "STARTER outside a region": ("# BEGIN STARTER\n# x = 1\n# END STARTER\n", 1, "outside a solution region"),
    "END STARTER without BEGIN STARTER": (
        "# BEGIN SOLUTION TODO 1: a\nx = 1\n# END STARTER\n# END SOLUTION\n",
        3,
        "END STARTER without a BEGIN STARTER",
    ),
    "two STARTER blocks": (
        "# BEGIN SOLUTION TODO 1: a\n# BEGIN STARTER\n# END STARTER\n# BEGIN STARTER\n# END STARTER\n# END SOLUTION\n",
        4,
        "a second STARTER block",
    ),
    "unclosed STARTER": (
        "# BEGIN SOLUTION TODO 1: a\n# BEGIN STARTER\n# x = 1\n# END SOLUTION\n",
        4,
        "inside the STARTER",
    ),
    "code in a STARTER block": (
        "# BEGIN SOLUTION TODO 1: a\n# BEGIN STARTER\nx = 1\n# END STARTER\n# END SOLUTION\n",
        3,
        "is a comment",
    ),
    "BEGIN without a number": ("# BEGIN SOLUTION: a\nx = 1\n# END SOLUTION\n", 1, "malformed marker"),
    "BEGIN without a title": ("# BEGIN SOLUTION TODO 1\nx = 1\n# END SOLUTION\n", 1, "malformed marker"),
    "TODO 0": ("# BEGIN SOLUTION TODO 0: zero\nx = 1\n# END SOLUTION\n", 1, "malformed marker"),
    "END with extra words": ("# BEGIN SOLUTION TODO 1: a\nx = 1\n# END SOLUTION TODO 1\n", 3, "malformed marker"),
    "starter does not parse": (
        "class A:\n    # BEGIN SOLUTION TODO 1: the body\n    x = 1\n    # END SOLUTION\n",
        2,
        "does not parse",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_misplaced_markers_are_errors_with_file_and_line(tmp_path: Path, case: str) -> None:
    """Each marker mistake stops generation with `file:line: message`, the file inside the solution tree."""
    text, line, message = BROKEN[case]
    solution = _tree(tmp_path / "solution", {"app/main.py": "app = None\n", "app/module.py": text})
    with pytest.raises(MarkerError) as caught:
        starters.render(solution)
    assert (caught.value.path, caught.value.line) == (f"{solution}/app/module.py", line)
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{solution}/app/module.py:{line}: ")


def test_a_todo_number_used_twice_in_a_lab_is_an_error(tmp_path: Path) -> None:
    """Two regions may not share a number, even in different files."""
    region = "def f() -> None:\n    # BEGIN SOLUTION TODO 1: {title}\n    pass\n    # END SOLUTION\n"
    solution = _tree(tmp_path, {"app/a.py": region.format(title="one"), "app/b.py": region.format(title="again")})
    with pytest.raises(MarkerError, match=r"/app/b\.py:2: TODO 1 is already used at app/a\.py:2"):
        starters.todos(solution)


def test_todo_numbers_must_run_from_one_without_gaps(tmp_path: Path) -> None:
    """TODOs 1 and 3 without a 2 is an error pointing at the TODO after the gap."""
    region = "# BEGIN SOLUTION TODO {n}: step {n}\nX{n} = {n}\n# END SOLUTION\n"
    solution = _tree(tmp_path, {"app/a.py": region.format(n=1) + region.format(n=3)})
    with pytest.raises(MarkerError, match=r"/app/a\.py:4: .*TODO 3: step 3 follows a gap \(missing \[2\]\)"):
        starters.todos(solution)


def test_render_refuses_unknown_todo_numbers(tmp_path: Path) -> None:
    """Asking for a TODO the solution does not have is a mistake, not an empty selection."""
    solution = _tree(tmp_path, {"app/a.py": "# BEGIN SOLUTION TODO 1: one\nX = 1\n# END SOLUTION\n"})
    with pytest.raises(ValueError, match="has no TODO 2"):
        starters.render(solution, only={2})


def test_render_with_only_one_todo_changes_only_its_file() -> None:
    """With one TODO in starter form, the medium tree differs from the unmarked solution in that file only."""
    todo = starters.todos(MEDIUM_SOLUTION)[7]
    solution = starters.render(MEDIUM_SOLUTION, only=set())
    without_one = starters.render(MEDIUM_SOLUTION, only={todo.number})
    assert [path for path in solution if solution[path] != without_one[path]] == [todo.path]
    assert f"# {todo}" in without_one[todo.path].content.decode()


def test_a_lab_without_any_region_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Generating a starter from a solution with no markers is a mistake: exit 2, nothing written."""
    _tree(tmp_path / "solutions" / "medium", {"app/main.py": "app = None\n"})
    assert starters.main(["--root", str(tmp_path)]) == 2
    assert "no solution region" in capsys.readouterr().err
    assert not (tmp_path / "medium_lab").exists()


def test_list_prints_each_todo_in_order_with_its_place(capsys: pytest.CaptureFixture[str]) -> None:
    """--list prints `TODO n: title (file:line)` for each TODO, in number order."""
    assert starters.main(["--list", "--lab", "medium"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = [f"{todo} (solutions/medium/{todo.path}:{todo.line})" for todo in starters.todos(MEDIUM_SOLUTION)]
    assert lines == expected


# --- generation and the check ----------------------------------------------------------------------------


def _copy_lab(destination: Path) -> Path:
    """The medium solution and starter as files under a fresh repository root (caches left out)."""
    for tree in (MEDIUM_SOLUTION, MEDIUM_STARTER):
        for path in starters.tree_files(tree):
            target = destination / tree.relative_to(ROOT) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / path, target)
    return destination


def test_check_detects_a_hand_edit_and_generation_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--check exits 1 with a diff on an edited, added or removed file; generating restores the starter."""
    root = _copy_lab(tmp_path)
    check = ["--check", "--root", str(root), "--lab", "medium"]
    assert starters.main(check) == 0
    starter = root / "medium_lab"
    models = starter / "app" / "models.py"
    models.write_text(models.read_text().replace("return value", "return value  # edited by hand"))
    (starter / "app" / "extra.py").write_text("EXTRA = 1\n")
    (starter / "app" / "stale").mkdir()
    (starter / "app" / "stale" / "old.py").write_text("OLD = 1\n")
    (starter / "app" / "__pycache__").mkdir(exist_ok=True)
    (starter / "app" / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"ignored")
    (starter / ".env.example").unlink()
    (starter / "README.md").write_text("# The lab sheet is the starter's own\n")
    capsys.readouterr()

    assert starters.main(check) == 1
    captured = capsys.readouterr()
    assert "-        return value  # edited by hand" in captured.out
    assert "+        return value" in captured.out
    assert "--- a/medium_lab/app/extra.py" in captured.out
    assert "+++ b/medium_lab/.env.example (generated)" in captured.out
    assert "--- a/medium_lab/app/stale/old.py" in captured.out
    assert "README.md" not in captured.out and "__pycache__" not in captured.out
    assert "nox -s starters" in captured.err

    assert starters.main(["--root", str(root), "--lab", "medium"]) == 0
    assert starters.main(check) == 0
    assert not (starter / "app" / "extra.py").exists()
    assert not (starter / "app" / "stale").exists(), "a directory left empty is removed"
    assert (starter / "app" / "__pycache__" / "models.cpython-311.pyc").exists(), "ignored files are left alone"
    assert (starter / "README.md").read_text() == "# The lab sheet is the starter's own\n"


def test_committed_medium_starter_is_what_generation_gives() -> None:
    """`python grader/starters.py --check` passes on the repository (CI runs this)."""
    result = subprocess.run(
        [sys.executable, "grader/starters.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the advanced starter's files other than Python --------------------------------------------------------

ADVANCED_SOLUTION, ADVANCED_STARTER = ROOT / "solutions" / "advanced", ROOT / "advanced_lab"


def test_advanced_todos_in_the_dockerfile_and_locustfile_are_prompted_once_without_markers() -> None:
    """The image, database and load-test TODOs are in the starter as prompts; no marker text is left in any file."""
    todos = {todo.path: todo for todo in starters.todos(ADVANCED_SOLUTION) if not todo.path.startswith("app/")}
    assert {"Dockerfile", "locustfile.py"} <= set(todos)
    texts = {path: (ADVANCED_STARTER / path).read_text() for path in starters.tree_files(ADVANCED_STARTER)}
    for path, todo in todos.items():
        assert texts[path].count(f"# {todo}\n") == 1, todo
    assert not [path for path, text in texts.items() if any(word in text for word in MARKER_WORDS)]
    assert "\nCMD " not in texts["Dockerfile"] and "\nUSER " not in texts["Dockerfile"]


# --- the medium starter ----------------------------------------------------------------------------------


def test_medium_todos_are_numbered_one_to_n_and_each_is_prompted_once_in_the_starter() -> None:
    """The medium TODOs run 1..N, and the starter carries each `# TODO n: title` prompt exactly once."""
    todos = starters.todos(MEDIUM_SOLUTION)
    assert [todo.number for todo in todos] == list(range(1, len(todos) + 1))
    assert 10 <= len(todos) <= 16
    assert all(not todo.path.startswith("app/agent/") for todo in todos), "the agent package has no TODOs"
    texts = {
        path: (MEDIUM_STARTER / path).read_text()
        for path in starters.tree_files(MEDIUM_STARTER)
        if path.endswith(".py")
    }
    for todo in todos:
        assert texts[todo.path].count(f"# {todo}\n") == 1, todo
        assert sum(text.count(f"# TODO {todo.number}:") for text in texts.values()) == 1, todo


def test_medium_starter_has_the_solutions_files_without_tests_or_markers() -> None:
    """Same files as the solution (minus its README and tests), plus the lab sheet; no marker text anywhere."""
    solution_files = starters.tree_files(MEDIUM_SOLUTION, starters.SOLUTION_ONLY)
    assert starters.tree_files(MEDIUM_STARTER, starters.STARTER_OWNED) == solution_files
    assert (MEDIUM_STARTER / "README.md").is_file()
    assert not (MEDIUM_STARTER / "tests").exists()
    for path in starters.tree_files(MEDIUM_STARTER):
        text = (MEDIUM_STARTER / path).read_text()
        assert not [word for word in MARKER_WORDS if word in text], path


def _signatures(source: str) -> list[str]:
    """Each top-level function, class (bases), method and annotated name, with its full signature."""
    found: list[str] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                decorators = "".join(f"@{ast.unparse(d)} " for d in node.decorator_list)
                kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
                returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
                found.append(f"{decorators}{kind} {prefix}{node.name}({ast.unparse(node.args)}){returns}")
            elif isinstance(node, ast.ClassDef):
                found.append(f"class {prefix}{node.name}({', '.join(ast.unparse(base) for base in node.bases)})")
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.AnnAssign):
                found.append(f"{prefix}{ast.unparse(node.target)}: {ast.unparse(node.annotation)}")

    visit(ast.parse(source).body, "")
    return found


@pytest.mark.parametrize(
    "path", [p for p in starters.tree_files(MEDIUM_SOLUTION, starters.SOLUTION_ONLY) if p.endswith(".py")]
)
def test_medium_starter_keeps_every_signature_and_type_hint(path: str) -> None:
    """Functions, methods, classes and annotated names are the solution's, with the same hints."""
    solution = _signatures((MEDIUM_SOLUTION / path).read_text())
    assert _signatures((MEDIUM_STARTER / path).read_text()) == solution


_ROUTES = (
    "import json; from app.main import app; "
    "print(json.dumps({path: sorted(operations) for path, operations in app.openapi()['paths'].items()}))"
)


def test_medium_starter_has_the_solutions_routes() -> None:
    """The starter's OpenAPI schema has the solution's paths and methods."""
    routes = [
        json.loads(
            subprocess.run([sys.executable, "-c", _ROUTES], cwd=tree, capture_output=True, text=True, check=True).stdout
        )
        for tree in (MEDIUM_SOLUTION, MEDIUM_STARTER)
    ]
    assert routes[0] == routes[1]
    assert "/api/v1/query/stream" in routes[1]


def test_medium_starter_boots_and_answers_health_root_and_docs() -> None:
    """`uvicorn app.main:app` in medium_lab starts and answers /health (200, healthy), / and /docs."""
    with run_stage(MEDIUM_STARTER) as stage, httpx.Client(base_url=stage.url, timeout=10) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["status"] == "healthy"
        assert client.get("/").status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        log = stage.log()
    assert "Traceback" not in log


def test_medium_lab_sheet_lists_every_todo_in_order() -> None:
    """The lab sheet's TODO table has one row per TODO, in order, with the title and file the code has."""
    sheet = (MEDIUM_STARTER / "README.md").read_text()
    rows = [line for line in sheet.splitlines() if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    todos = starters.todos(MEDIUM_SOLUTION)
    assert len(rows) == len(todos)
    for row, todo in zip(rows, todos, strict=True):
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        assert cells[:2] == [str(todo.number), todo.title]
        assert cells[2].startswith(f"`{todo.path.removeprefix('app/')}`")
