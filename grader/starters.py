"""Generate each lab's starter tree from its solution, replacing the fenced solution regions with TODOs.

Usage (from anywhere, or as `python -m grader.starters`; `nox -s starters [-- --check]` runs it too):

    python grader/starters.py           write the starter trees (medium_lab/ from solutions/medium/)
    python grader/starters.py --check   exit 1, printing a unified diff, when a committed starter differs
    python grader/starters.py --list    print the TODOs in order: `TODO n: title (file:line)`

Markers
-------
A solution region is fenced by two whole-line comments, in Python and in any file whose comments start
with `#` (Dockerfile, YAML, TOML, `.env.example`, requirements files):

    # BEGIN SOLUTION TODO 3: cache the response
    ...the solution's code...
    # END SOLUTION

The solution keeps its markers (as otter's and nbgrader's sources do). In the starter, the region becomes
the prompt `# TODO 3: cache the response`, at the indentation of the BEGIN line, followed by:

- the lines of the region's STARTER block, when it has one (anywhere inside the region, at most one):

      # BEGIN STARTER
      # return None
      # END STARTER

  Every STARTER line is a comment; without its leading `# ` (a bare `#` or an empty line gives an empty
  line) it becomes a starter line, indented by the BEGIN line's indentation plus whatever indentation
  follows the `# `. An empty STARTER block leaves only the prompt.
- otherwise, the default: in a Python file where the innermost `def` or `class` around the BEGIN line is a
  function, `raise NotImplementedError("TODO 3: cache the response")`; anywhere else (module or class
  level, other files) nothing. The syntax tree decides, not the indentation, so a region in a class body
  or under a module-level `if` is not mistaken for a function body. Where the default does not fit (a
  class body, the middle of an expression, an async generator that must stay one, an import that must
  stay used), the author writes a STARTER block.

Errors, each reported as `file:line: message`: a malformed marker; a BEGIN without its END or an END
without its BEGIN; a region inside another; a STARTER block outside a region, twice in one region, or with
a line that is not a comment; a TODO number used twice in one lab; numbers that do not run 1..N; a Python
file that no longer parses once a TODO is replaced.

Trees
-----
LABS maps each solution to its starter. A starter gets every file of its solution except the solution's
own top-level `README.md`, `SECURITY.md` and `tests/` (SOLUTION_ONLY: the tests, and the checklist that names
them, would give the answers away) and what is never committed (IGNORED: caches, databases, build output,
`.env`). Generation writes only files whose content changed,
removes generated files that the solution no longer has, and leaves the starter's own top-level files
alone (STARTER_OWNED: `README.md`, the lab sheet written for students). The check renders in memory and
compares with the starter on disk, which is the same as generating into a temporary tree and diffing.

For other tools: `todos(solution)` lists the TODOs in order, `render(solution, only)` returns the files of
the tree in which only the chosen TODOs take their starter form (the others keep their solution code, all
markers removed; `only=None` gives the starter), and `write_tree(files, destination)` writes them out.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fnmatch
import os
import re
import stat
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Lab:
    """A lab: its name, and its solution and starter trees relative to the repository's root."""

    name: str
    solution: str
    starter: str


LABS = (
    Lab("medium", "solutions/medium", "medium_lab"),
    Lab("advanced", "solutions/advanced", "advanced_lab"),
)
# The labs generated and checked when none is named.
DEFAULT_LABS = ("medium", "advanced")
# Top-level entries of a solution that its starter does not get: its own lab sheet, its security checklist
# (each item with how the solution meets it), its measured results and their plots, and its tests.
SOLUTION_ONLY = frozenset({"README.md", "SECURITY.md", "PERFORMANCE.md", "docs", "tests"})
# Top-level entries of a starter that are its own (the student's lab sheet): generation never touches them.
STARTER_OWNED = frozenset({"README.md"})
# Names (at any depth) that are never copied, compared or removed: what .gitignore keeps out of the repository.
IGNORED = (
    *("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".nox", ".venv", "venv", "*.egg-info"),
    *("*.py[cod]", "*.db", "*.db-journal", "*.sqlite3", ".env", ".coverage", "prometheus_multiproc", "grader-results"),
    *("build", "dist", "htmlcov"),  # what a load test, a package build or coverage writes
)

_MARKER = re.compile(r"^[ \t]*#\s*(BEGIN|END)\s+(SOLUTION|STARTER)\b")
_BEGIN_SOLUTION = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION TODO (?P<number>[1-9][0-9]*): (?P<title>\S.*?)\s*$")
_PLAIN_MARKERS = {"# END SOLUTION": "END SOLUTION", "# BEGIN STARTER": "BEGIN STARTER", "# END STARTER": "END STARTER"}


class MarkerError(Exception):
    """A misplaced or malformed marker; `str()` gives `file:line: message`."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message

    def under(self, tree: Path | str) -> MarkerError:
        """The same error with its path inside `tree`."""
        return MarkerError(f"{tree}/{self.path}", self.line, self.message)


@dataclass(frozen=True)
class Todo:
    """One numbered TODO: where its region begins (1-based line of a file relative to its tree)."""

    number: int
    title: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"TODO {self.number}: {self.title}"


@dataclass(frozen=True)
class Region:
    """A fenced solution region of one file: its line span, its solution code and its STARTER lines."""

    todo: Todo
    indent: str
    first: int  # index of the BEGIN SOLUTION line
    last: int  # index of the END SOLUTION line
    solution: tuple[str, ...]  # the lines between, with their endings, the STARTER block left out
    starter: tuple[str, ...] | None  # the STARTER block's lines, uncommented, relative to `indent`


@dataclass(frozen=True)
class RenderedFile:
    """A file of a rendered tree."""

    content: bytes
    executable: bool = False


@dataclass
class _OpenRegion:
    todo: Todo
    indent: str
    first: int
    solution: list[str] = field(default_factory=list)
    starter: list[str] | None = None
    starter_line: int = 0  # 1-based line of an unclosed BEGIN STARTER, else 0


def _marker(line: str, path: str, number: int) -> tuple[str, re.Match[str] | None] | None:
    """The marker on this line, as (kind, BEGIN SOLUTION match), or None; MarkerError if malformed."""
    if not _MARKER.match(line):
        return None
    text = line.strip()
    if begin := _BEGIN_SOLUTION.match(line):
        return "BEGIN SOLUTION", begin
    if text in _PLAIN_MARKERS:
        return _PLAIN_MARKERS[text], None
    expected = "'# BEGIN SOLUTION TODO <n>: <title>', '# END SOLUTION', '# BEGIN STARTER' or '# END STARTER'"
    raise MarkerError(path, number, f"malformed marker {text!r}: expected {expected}")


def _uncomment(line: str, path: str, number: int) -> str:
    body = line.strip(" \t")
    if body in ("", "#"):
        return ""
    if not body.startswith("# "):
        raise MarkerError(path, number, "every line of a STARTER block is a comment starting with '# '")
    return body[2:].rstrip()


def parse(text: str, path: str) -> list[Region]:
    """The solution regions of one file's text, in order; `path` names the file in Todos and errors."""
    regions: list[Region] = []
    current: _OpenRegion | None = None
    for index, raw in enumerate(text.splitlines(keepends=True)):
        line, number = raw.rstrip("\r\n"), index + 1
        marker = _marker(line, path, number)
        if current is None:
            if marker is None:
                continue
            kind, begin = marker
            if kind == "END SOLUTION":
                raise MarkerError(path, number, "END SOLUTION without a BEGIN SOLUTION")
            if begin is None:
                raise MarkerError(path, number, f"{kind} outside a solution region: a STARTER block belongs inside one")
            todo = Todo(int(begin["number"]), begin["title"], path, number)
            current = _OpenRegion(todo, begin["indent"], index)
        elif current.starter_line:
            if marker is None:
                assert current.starter is not None
                current.starter.append(_uncomment(line, path, number))
            elif marker[0] == "END STARTER":
                current.starter_line = 0
            else:
                raise MarkerError(
                    path, number, f"{marker[0]} inside the STARTER block begun at line {current.starter_line}"
                )
        elif marker is None:
            current.solution.append(raw)
        elif marker[0] == "BEGIN SOLUTION":
            raise MarkerError(
                path, number, f"regions do not nest: {current.todo}'s region began at line {current.first + 1}"
            )
        elif marker[0] == "BEGIN STARTER":
            if current.starter is not None:
                raise MarkerError(path, number, f"a second STARTER block in {current.todo}'s region")
            current.starter, current.starter_line = [], number
        elif marker[0] == "END STARTER":
            raise MarkerError(path, number, "END STARTER without a BEGIN STARTER")
        else:
            starter = None if current.starter is None else tuple(current.starter)
            regions.append(Region(current.todo, current.indent, current.first, index, tuple(current.solution), starter))
            current = None
    if current is not None:
        if current.starter_line:
            raise MarkerError(path, current.starter_line, "BEGIN STARTER without an END STARTER")
        raise MarkerError(path, current.first + 1, f"BEGIN SOLUTION ({current.todo}) has no END SOLUTION")
    return regions


def _string_literal(text: str) -> str:
    """A Python string literal for `text`, quoted the way ruff's formatter prefers."""
    quote = "'" if text.count('"') > text.count("'") else '"'
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def _in_function(tree: ast.Module, line: int) -> bool:
    """Whether the innermost `def` or `class` around `line` is a function."""
    scopes = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    around = [
        node for node in ast.walk(tree) if isinstance(node, scopes) and node.lineno < line <= (node.end_lineno or 0)
    ]
    innermost = max(around, key=lambda node: node.lineno, default=None)
    return isinstance(innermost, ast.FunctionDef | ast.AsyncFunctionDef)


def _starter_lines(region: Region, raises: bool, newline: str) -> list[str]:
    lines = [f"{region.indent}# {region.todo}"]
    if region.starter is not None:
        lines += [f"{region.indent}{line}" if line else "" for line in region.starter]
    elif raises:
        lines.append(f"{region.indent}raise NotImplementedError({_string_literal(str(region.todo))})")
    return [line + newline for line in lines]


def _render_regions(text: str, path: str, regions: Sequence[Region], only: Collection[int] | None) -> str:
    lines = text.splitlines(keepends=True)
    python = path.endswith(".py")
    tree = _parse_python(text, path) if python else None
    rendered: list[str] = []
    replaced: list[tuple[int, Region]] = []  # (1-based rendered line of the prompt, region)
    position = 0
    for region in regions:
        rendered += lines[position : region.first]
        if only is None or region.todo.number in only:
            replaced.append((len(rendered) + 1, region))
            newline = "\r\n" if lines[region.first].endswith("\r\n") else "\n"
            raises = tree is not None and _in_function(tree, region.first + 1)
            rendered += _starter_lines(region, raises, newline)
        else:
            rendered += region.solution
        position = region.last + 1
    rendered += lines[position:]
    result = "".join(rendered)
    if python and replaced:
        _check_parses(result, path, replaced)
    return result


def _parse_python(text: str, path: str) -> ast.Module:
    try:
        return ast.parse(text, filename=path)
    except SyntaxError as error:
        raise MarkerError(path, error.lineno or 1, f"the solution does not parse: {error.msg}") from None


def _check_parses(text: str, path: str, replaced: Sequence[tuple[int, Region]]) -> None:
    try:
        ast.parse(text, filename=path)
    except SyntaxError as error:
        line = error.lineno or 1
        culprit = max((item for item in replaced if item[0] <= line), key=lambda item: item[0], default=replaced[0])
        todo = culprit[1].todo
        message = f"with {todo} replaced the file does not parse ({error.msg}); give the region a STARTER block"
        raise MarkerError(path, todo.line, message) from None


def render_text(text: str, path: str, only: Collection[int] | None = None) -> str:
    """One file's text with the chosen TODOs (all when `only` is None) in starter form, the rest unmarked."""
    return _render_regions(text, path, parse(text, path), only)


def _ignored(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in IGNORED)


def _walk(tree: Path, skip: Collection[str]) -> list[tuple[Path, list[str]]]:
    """Each directory of the tree (relative) with its file names, IGNORED names and top-level `skip` left out."""
    found = []
    for directory, dirnames, filenames in os.walk(tree):
        top = Path(directory) == tree
        dirnames[:] = [name for name in dirnames if not _ignored(name) and not (top and name in skip)]
        files = [name for name in filenames if not _ignored(name) and not (top and name in skip)]
        found.append((Path(directory).relative_to(tree), files))
    return found


def tree_files(tree: Path, skip: Collection[str] = ()) -> list[str]:
    """The tree's files as sorted POSIX paths relative to it, without IGNORED names and top-level `skip`."""
    return sorted((directory / name).as_posix() for directory, names in _walk(tree, skip) for name in names)


def _decode(content: bytes) -> str | None:
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


@dataclass(frozen=True)
class _Source:
    path: str
    content: bytes
    text: str | None
    regions: tuple[Region, ...]
    executable: bool


def _read_solution(solution: Path) -> list[_Source]:
    if not solution.is_dir():
        raise FileNotFoundError(f"no solution tree at {solution}")
    sources = []
    for path in tree_files(solution, SOLUTION_ONLY):
        file = solution / path
        content = file.read_bytes()
        text = _decode(content)
        try:
            regions = tuple(parse(text, path)) if text is not None else ()
        except MarkerError as error:
            raise error.under(solution) from None
        sources.append(_Source(path, content, text, regions, _is_executable(file)))
    _check_numbers([region.todo for source in sources for region in source.regions], solution)
    return sources


def _check_numbers(todos: Sequence[Todo], solution: Path) -> None:
    seen: dict[int, Todo] = {}
    for todo in todos:
        if first := seen.get(todo.number):
            message = f"TODO {todo.number} is already used at {first.path}:{first.line}"
            raise MarkerError(todo.path, todo.line, message).under(solution)
        seen[todo.number] = todo
    if missing := sorted(set(range(1, len(seen) + 1)) - set(seen)):
        last = seen[max(seen)]
        message = f"TODOs are numbered 1..N in each lab: {last} follows a gap (missing {missing})"
        raise MarkerError(last.path, last.line, message).under(solution)


def todos(solution: Path) -> list[Todo]:
    """The solution tree's TODOs in number order (MarkerError if its markers are wrong)."""
    return sorted(
        (region.todo for source in _read_solution(solution) for region in source.regions), key=lambda t: t.number
    )


def render(solution: Path, only: Collection[int] | None = None) -> dict[str, RenderedFile]:
    """The tree generated from `solution`: every TODO in starter form, or only those numbered in `only`.

    The keys are POSIX paths relative to the tree. With `only`, the other regions keep their solution
    code (markers removed), which gives the solution with just those TODOs missing.
    """
    sources = _read_solution(solution)
    numbers = {region.todo.number for source in sources for region in source.regions}
    if only is not None and (unknown := set(only) - numbers):
        raise ValueError(f"{solution} has no TODO {', '.join(map(str, sorted(unknown)))}")
    files = {}
    for source in sources:
        content = source.content
        if source.regions:
            assert source.text is not None
            try:
                content = _render_regions(source.text, source.path, source.regions, only).encode("utf-8")
            except MarkerError as error:
                raise error.under(solution) from None
        files[source.path] = RenderedFile(content, source.executable)
    return files


def write_tree(files: Mapping[str, RenderedFile], destination: Path, keep: Collection[str] = ()) -> list[str]:
    """Make `destination` hold exactly `files` (besides IGNORED and top-level `keep` ones); return the changes."""
    changed = []
    for path, file in sorted(files.items()):
        target = destination / path
        if not target.is_file() or target.read_bytes() != file.content:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.content)
            changed.append(path)
        if _is_executable(target) != file.executable:
            mode = target.stat().st_mode
            target.chmod(mode | 0o111 if file.executable else mode & ~0o111)
            changed.append(path)
    for path in tree_files(destination, keep):
        if path not in files:
            (destination / path).unlink()
            changed.append(path)
    for directory, _ in sorted(_walk(destination, keep), reverse=True):  # the deepest first
        if directory != Path() and not any((destination / directory).iterdir()):
            (destination / directory).rmdir()
    return sorted(set(changed))


def differences(files: Mapping[str, RenderedFile], destination: Path, keep: Collection[str] = ()) -> list[str]:
    """A unified diff from the tree at `destination` to `files` (top-level `keep` files aside); [] if equal."""
    on_disk = set(tree_files(destination, keep)) if destination.is_dir() else set()
    lines: list[str] = []
    for path in sorted(on_disk | set(files)):
        label = f"{destination.name}/{path}"
        old = (
            RenderedFile((destination / path).read_bytes(), _is_executable(destination / path))
            if path in on_disk
            else None
        )
        new = files.get(path)
        if old == new:
            continue
        if old is not None and new is not None and old.content == new.content:
            lines.append(f"{label}: executable is {old.executable}, generation gives {new.executable}")
            continue
        old_text = "" if old is None else _decode(old.content)
        new_text = "" if new is None else _decode(new.content)
        if old_text is None or new_text is None:
            lines.append(f"Binary files {label} differ")
            continue
        lines += difflib.unified_diff(
            old_text.splitlines(),
            new_text.splitlines(),
            fromfile=f"a/{label}" if old is not None else "/dev/null",
            tofile=f"b/{label} (generated)" if new is not None else "/dev/null",
            lineterm="",
        )
    return lines


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python grader/starters.py", description="Generate the labs' starter trees from their solutions."
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 with a diff if a starter differs")
    parser.add_argument("--list", action="store_true", dest="list_todos", help="print each lab's TODOs in order")
    names = [lab.name for lab in LABS]
    parser.add_argument(
        "--lab", action="append", choices=names, help=f"a lab to process (default: {', '.join(DEFAULT_LABS)})"
    )
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: the one holding this file)")
    return parser.parse_args(argv)


def _process(lab: Lab, root: Path, arguments: argparse.Namespace) -> int:
    solution, starter = root / lab.solution, root / lab.starter
    listed = todos(solution)
    if not listed and not arguments.list_todos:
        print(f"error: {lab.solution} has no solution region: its starter would be the solution", file=sys.stderr)
        return 2
    if arguments.list_todos:
        for todo in listed:
            print(f"{todo} ({lab.solution}/{todo.path}:{todo.line})")
        return 0
    files = render(solution)
    if arguments.check:
        if diff := differences(files, starter, STARTER_OWNED):
            print("\n".join(diff))
            print(f"{lab.starter} is not what {lab.solution} generates: run `nox -s starters`", file=sys.stderr)
            print("(a starter is generated, never edited by hand: change the solution's markers)", file=sys.stderr)
            return 1
        print(f"{lab.starter} is up to date ({len(listed)} TODOs)")
        return 0
    changed = write_tree(files, starter, STARTER_OWNED)
    print(f"{lab.starter}: {len(listed)} TODOs, {len(changed)} file(s) changed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 done (or up to date), 1 a starter differs (--check), 2 the markers are wrong."""
    arguments = _arguments(argv)
    root: Path = arguments.root.resolve()
    status = 0
    for lab in (lab for lab in LABS if lab.name in (arguments.lab or DEFAULT_LABS)):
        try:
            status = max(status, _process(lab, root, arguments))
        except (MarkerError, FileNotFoundError) as error:
            message = str(error).replace(f"{root}{os.sep}", "")
            print(f"error: {message}", file=sys.stderr)
            return 2
    return status


if __name__ == "__main__":
    sys.exit(main())
