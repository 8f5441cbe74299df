"""Build a lab's Gradescope autograder zip: `python -m grader.gradescope_bundle --lab LAB` (into build/)."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "grader" / "gradescope"
LAB_LINE = "lab=${GRADER_LAB:-}"
GRADER_NEEDS = ("httpx",)  # the grader's only third-party import; the lab's pins must hold it
# Programs the grader runs for a lab, which the lab's own pins (its runtime) rightly lack: the load test's Locust.
GRADER_TOOLS = {"advanced": ("locust",)}
DEV_PINS = ROOT / "tests" / "requirements.txt"
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # the same inputs make the same zip, byte for byte
EXECUTABLE, REGULAR = 0o100755, 0o100644


def requirements(lab: str) -> str:
    """The pins installed by setup.sh: the lab's own requirements.txt, checked to hold what the grader imports,
    then the tools the grader runs for the lab (GRADER_TOOLS) with their dependencies, pinned as in the dev pins."""
    text = (ROOT / f"solutions/{lab}/requirements.txt").read_text(encoding="utf-8")
    pinned = {pin_name(line) for line in text.splitlines() if "==" in line}
    if missing := [name for name in GRADER_NEEDS if name not in pinned]:
        raise SystemExit(f"solutions/{lab}/requirements.txt does not pin what the grader needs: {', '.join(missing)}")
    tools = GRADER_TOOLS.get(lab, ())
    extra = [line for name, line in closure(tools, DEV_PINS.read_text(encoding="utf-8")).items() if name not in pinned]
    if not extra:
        return text
    heading = f"# What the grader runs for this lab ({', '.join(tools)}), pinned as in tests/requirements.txt"
    return "\n".join([text.rstrip(), heading, *extra]) + "\n"


def pin_name(line: str) -> str:
    return re.split(r"[=\[ ;]", line.strip(), maxsplit=1)[0].lower()


def closure(names: Sequence[str], text: str) -> dict[str, str]:
    """The pin lines of `names` and of all they need, read from the `# via` notes of a uv-compiled file."""
    lines: dict[str, str] = {}
    needed_by: dict[str, set[str]] = {}
    current = ""
    for line in text.splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            current = pin_name(line)
            lines[current], needed_by[current] = line.strip(), set()
        elif current and (via := re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9_.-]+)\s*$", line)):
            needed_by[current].add(via[1].lower())
    wanted = {name.lower() for name in names}
    while grown := {name for name, users in needed_by.items() if users & wanted} - wanted:
        wanted |= grown
    return {name: lines[name] for name in sorted(wanted) if name in lines}


def run_autograder(lab: str, hidden: str = "") -> str:
    """The run_autograder script with the lab pinned (GRADER_LAB still overrides it), and the checks hidden until
    the due date, if any, exported as GRADER_HIDDEN (Gradescope shows them after it: `after_due_date`)."""
    script = (SCRIPTS / "run_autograder").read_text(encoding="utf-8")
    if LAB_LINE not in script:
        raise SystemExit(f"grader/gradescope/run_autograder has no `{LAB_LINE}` line to pin the lab on")
    pinned = f"lab=${{GRADER_LAB:-{lab}}}"
    if hidden:  # the grader itself refuses a name that is no check or topic (stdlib only here: no registry)
        pinned += f"\nexport GRADER_HIDDEN=${{GRADER_HIDDEN:-{shlex.quote(hidden)}}}"
    return script.replace(LAB_LINE, pinned, 1)


def _grader_files() -> list[Path]:
    """The grader package's sources (no caches, no packaging scripts)."""
    package = ROOT / "grader"
    return sorted(
        path
        for path in package.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.relative_to(package).parts[0] not in ("gradescope", "github")
        and path.suffix in (".py", ".md")
    )


def _add(bundle: zipfile.ZipFile, name: str, text: str, mode: int = REGULAR) -> None:
    info = zipfile.ZipInfo(name, FIXED_TIME)
    info.external_attr, info.compress_type = mode << 16, zipfile.ZIP_DEFLATED
    bundle.writestr(info, text)


def build(lab: str, out: Path, hidden: str = "") -> Path:
    """Write `out/gradescope-<lab>.zip`: setup.sh, run_autograder, requirements.txt and the grader package."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"gradescope-{lab}.zip"
    with zipfile.ZipFile(target, "w") as bundle:
        _add(bundle, "setup.sh", (SCRIPTS / "setup.sh").read_text(encoding="utf-8"), EXECUTABLE)
        _add(bundle, "run_autograder", run_autograder(lab, hidden), EXECUTABLE)
        _add(bundle, "requirements.txt", requirements(lab))
        for path in _grader_files():
            _add(bundle, path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8"))
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.gradescope_bundle", description=__doc__)
    parser.add_argument("--lab", choices=["medium", "advanced"], required=True, help="the lab the autograder grades")
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="the folder the zip goes to (build/)")
    parser.add_argument("--hidden", default="", help="check ids or topics students see only after the due date")
    args = parser.parse_args(argv)
    target = build(args.lab, args.out, args.hidden)
    print(f"Gradescope autograder for the {args.lab} lab: {target} (upload it; Ubuntu base image)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
