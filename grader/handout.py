"""What a student receives for a lab, with no answer in it: `python -m grader.handout --lab LAB [--out DIR]`.

The handout is a folder to push as the assignment's template repository, laid out as the course repository is
for the student's part, so that every command of the lab sheet works in it as written:

- the lab folder (`medium_lab/` or `advanced_lab/`): the starter, rendered from the solution's markers (every
  TODO in its starter form), and its lab sheet;
- `noxfile.py`: the sheet's `serve`, `grade` and `labtests` tasks, for this folder (`templates/`);
- `README.md`: the one set-up line and those tasks; `CHECKS.md`: every check's statement and points;
- `.grader/`: the grader alone, as a wheel built from `grader/` without the instructor's tools (those read the
  solutions), and `requirements.txt`, the pins it is installed with (the lab's own, the load-test runner, pytest);
- `.github/workflows/classroom.yml`: GitHub Classroom's autograding, which installs the grader from `.grader/`
  and never checks out the course repository (which holds the solutions).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import checks, gradescope_bundle, starters, visibility
from grader.core import Lab, select

ROOT = Path(__file__).resolve().parents[1]
DIST_NAME, VERSION = "agent_deploy_labs_grader", "0.1.0"
WORKFLOW = ROOT / "grader" / "github" / "classroom.yml"
NOXFILE = ROOT / "grader" / "templates" / "handout_noxfile.py"
SETUP = "python3 -m venv .venv && .venv/bin/python -m pip install -q nox==2026.10.20 uv==0.13.9"
TOOLS = ("pytest",)  # what the handout's labtests runs, beside the grader's own pins
# The instructor's tools: they read the solutions, build bundles or grade a class, and a student needs none.
INSTRUCTOR_ONLY = frozenset(
    {"starters.py", "sensitivity.py", "progression.py", "similarity.py", "batch.py", "gradescope_bundle.py"}
    | {"handout.py"}
)
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # the same sources make the same wheel, byte for byte
STUDENT_GITIGNORE = ".venv/\n__pycache__/\n*.py[cod]\n*.db\n*.db-journal\n.env\ngrade.json\n"
assert checks.TOPICS  # importing the package registers every check


def grader_sources() -> list[Path]:
    """The grader's modules a student's job runs: the package without the instructor's tools and scripts."""
    package = ROOT / "grader"
    return sorted(
        path
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
        and not (path.parent == package and path.name in INSTRUCTOR_ONLY)
        and path.relative_to(package).parts[0] not in ("gradescope", "templates")
    )


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build_wheel(out: Path) -> Path:
    """A pure-Python wheel of the grader (PEP 427), written directly: no build backend is needed."""
    info = f"{DIST_NAME}-{VERSION}.dist-info"
    files = {path.relative_to(ROOT).as_posix(): path.read_bytes() for path in grader_sources()}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {DIST_NAME.replace('_', '-')}\nVersion: {VERSION}\n"
        "Summary: The agent-deploy-labs grader: checks a lab stage over HTTP.\n"
        "Requires-Python: >=3.11\nRequires-Dist: httpx\n"
    ).encode()
    files[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: grader.handout\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(name, data) for name, data in files.items()] + [f"{info}/RECORD,,"]
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{DIST_NAME}-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in files.items():
            member = zipfile.ZipInfo(name, FIXED_TIME)
            member.external_attr, member.compress_type = 0o100644 << 16, zipfile.ZIP_DEFLATED
            wheel.writestr(member, data)
    return target


def checks_sheet(lab: Lab, hidden: frozenset[str] = frozenset()) -> str:
    """CHECKS.md: every public check of the lab, by topic, with its points and the statement a student reads;
    the hidden ones are only counted."""
    every = select(lab)
    selected = [check for check in every if check.id not in hidden]
    lines = [
        f"# What the grader checks ({lab} lab)",
        "",
        f"{sum(c.points for c in selected)} points in {len(selected)} checks. Run it over your folder with the",
        "instructions in the lab sheet; a failed check says what it expected, what it saw, and where to look.",
    ]
    for topic in dict.fromkeys(c.module for c in selected):
        lines += ["", f"## {topic}", "", "| check | points | what it checks |", "| --- | --- | --- |"]
        lines += [f"| `{c.id}` | {c.points} | {c.title.replace('|', '/')} |" for c in selected if c.module == topic]
    if hidden:
        points = sum(c.points for c in every if c.id in hidden)
        lines += ["", f"And {len(hidden)} more checks ({points} points), shown after the due date."]
    return "\n".join(lines) + "\n"


def workflow(lab: Lab, folder: str) -> str:
    """The Classroom workflow template with the lab, its total and its folder filled in."""
    total = sum(check.points for check in select(lab))
    text = WORKFLOW.read_text(encoding="utf-8")
    text, labs = re.subn(r"(?m)^(\s*LAB: )\S+.*$", rf"\g<1>{lab}", text, count=1)
    text, totals = re.subn(r'(?m)^(\s*LAB_MAX_SCORE: )"\d+".*$', rf'\g<1>"{total}"', text, count=1)
    text, stages = re.subn(r'(?m)^(\s*STAGE: )"[^"]*".*$', rf'\g<1>"{folder}"  # the lab folder', text, count=1)
    if labs != 1 or totals != 1 or stages != 1:
        raise SystemExit(f"{WORKFLOW} has no `LAB:`, `LAB_MAX_SCORE:` and `STAGE:` lines to fill in")
    return text


def grader_requirements(lab: str) -> str:
    """The pins `.grader/` installs with: the grader's for the lab, and the tools of the handout's tasks."""
    dev = gradescope_bundle.DEV_PINS.read_text(encoding="utf-8")
    pinned = gradescope_bundle.requirements(lab)
    have = {gradescope_bundle.pin_name(line) for line in pinned.splitlines() if "==" in line}
    extra = [line for name, line in gradescope_bundle.closure(TOOLS, dev).items() if name not in have]
    heading = f"# What the handout's tasks run ({', '.join(TOOLS)}), pinned as in the course's dev pins"
    return "\n".join([pinned.rstrip(), heading, *extra]) + "\n" if extra else pinned


def readme(lab: starters.Lab) -> str:
    """The handout's front page: where the sheet is, the one set-up line, and the three tasks."""
    folder = lab.starter
    return (
        f"# The {lab.name} lab\n\n"
        f"Your work is in [`{folder}/`]({folder}/); its lab sheet, [`{folder}/README.md`]({folder}/README.md), "
        "says what to build, step by step. [`CHECKS.md`](CHECKS.md) lists what the grader checks.\n\n"
        "## Quickstart\n\nSet up once, with Python 3.11 or newer (it makes its own virtual environment):\n\n"
        f"```bash\n{SETUP}\n```\n\nThen, from this folder:\n\n"
        f"```bash\n.venv/bin/nox -s serve -- {folder}       # your service on http://127.0.0.1:8000/docs "
        f"(--port N for another)\n"
        f".venv/bin/nox -s grade -- {folder}       # the grader's checks, with what to fix next\n"
        f".venv/bin/nox -s labtests -- {folder}    # your own tests in {folder}/tests, if you write some\n```\n\n"
        "Every push is graded too (GitHub Classroom, `.github/workflows/classroom.yml`).\n"
    )


def _write(files: Iterable[tuple[str, bytes]], folder: Path) -> None:
    for name, data in files:
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def build(lab_name: str, out: Path, hidden: str = "") -> Path:
    """Write the handout of a lab to `out/handout-<lab>/` (replacing an earlier one); its folder."""
    lab = next(lab for lab in starters.LABS if lab.name == lab_name)
    folder = out / f"handout-{lab.name}"
    shutil.rmtree(folder, ignore_errors=True)
    starters.write_tree(starters.render(ROOT / lab.solution), folder / lab.starter)
    for name in sorted(starters.STARTER_OWNED):  # the student's lab sheet
        shutil.copyfile(ROOT / lab.starter / name, folder / lab.starter / name)
    _write(
        [
            ("README.md", readme(lab).encode()),
            ("noxfile.py", NOXFILE.read_text(encoding="utf-8").replace("LAB_DIR", lab.starter).encode()),
            ("CHECKS.md", checks_sheet(lab.name, visibility.parse(lab.name, hidden).hidden).encode()),  # type: ignore[arg-type]
            (".grader/requirements.txt", grader_requirements(lab.name).encode()),
            (".github/workflows/classroom.yml", workflow(lab.name, lab.starter).encode()),  # type: ignore[arg-type]
            (".gitignore", STUDENT_GITIGNORE.encode()),
        ],
        folder,
    )
    build_wheel(folder / ".grader")
    return folder


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.handout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", choices=[lab.name for lab in starters.LABS], required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="the folder the handout goes in (build/)")
    parser.add_argument("--hidden", default="", help="check ids or topics CHECKS.md counts but does not list")
    args = parser.parse_args(argv)
    folder = build(args.lab, args.out, args.hidden)
    print(f"handout of the {args.lab} lab: {folder} (push it as the assignment's template repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
