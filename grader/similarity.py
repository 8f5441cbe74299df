"""A class's similarity report: what each student wrote into the starter, compared pairwise, names and spacing aside.

    python -m grader.similarity SUBMISSIONS --lab LAB [--out DIR] [--threshold 0.6] [--min-lines 5]

A student's work is what their files add to the lab's starter: every line of a starter file that has a TODO is
diffed against the student's copy, and the lines the student wrote are kept, each under the TODO whose prompt
comes last before it. A line is normalised before it is compared: comments and blank lines go, and in Python
every name becomes `N`, every string `S` and every number `0` (keywords and operators stay), so renaming and
reformatting change nothing. Lines that the starter already has, and lines that most of the class wrote (the
obvious way to write a TODO), are not evidence and are left out.

A pair is listed when they share at least `--min-lines` such lines and those make up at least `--threshold` of
the smaller student's; the report (`similarity.md`, and `similarity.csv` with a row per listed pair) shows each
pair's shared lines as each of them wrote them. The lab's reference solution takes part as `(solution)` when it
is in this repository, so a submission of the solution itself is listed too. A listed pair is a reason to look,
not a verdict.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import io
import itertools
import keyword
import re
import sys
import tokenize
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader import starters

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = "(solution)"
DEFAULT_THRESHOLD, DEFAULT_MIN_LINES = 0.6, 5
# A line written by more than half of a class of at least 10 is the obvious way to write it, not a copy; in a
# smaller class, half may be two students who copied.
COMMON_SHARE, COMMON_MIN_CLASS = 0.5, 10
_PROMPT = re.compile(r"^\s*#\s*TODO (\d+):")
_SKIPPED_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
_FSTRING_TOKENS = {
    getattr(tokenize, name) for name in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, name)
}


@dataclass(frozen=True)
class Line:
    """A line a student wrote: where, under which TODO, as written and as compared."""

    path: str
    todo: int
    text: str
    key: str


@dataclass
class Work:
    """One student's written lines, by normalised form."""

    student: str
    lines: list[Line] = field(default_factory=list)

    def keys(self, left_out: set[str]) -> set[str]:
        return {line.key for line in self.lines} - left_out


def normalise(text: str, path: str) -> str:
    """The line as compared: "" for a comment or blank line; in Python, names, strings and numbers made alike."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return ""
    if not path.endswith(".py"):
        return " ".join(stripped.lower().split())
    out: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(stripped + "\n").readline):
            if token.type in _SKIPPED_TOKENS or token.type == tokenize.ENDMARKER:
                continue
            if token.type == tokenize.NAME:
                out.append(token.string if keyword.iskeyword(token.string) else "N")
            elif token.type == tokenize.STRING or token.type in _FSTRING_TOKENS:
                out.append("S")
            elif token.type == tokenize.NUMBER:
                out.append("0")
            else:
                out.append(token.string)
    except (tokenize.TokenError, SyntaxError, IndentationError):  # a line of a longer statement
        return " ".join(stripped.split())
    # One S for a run of string pieces: adjacent literals, or an f-string (several tokens on Python 3.12+).
    kept = [piece for index, piece in enumerate(out) if not (piece == "S" and index and out[index - 1] == "S")]
    return " ".join(kept)


def written_lines(starter_text: str, student_text: str, path: str) -> list[Line]:
    """The student's lines that the starter does not have, each under the TODO whose prompt precedes it."""
    starter, student = starter_text.splitlines(), student_text.splitlines()
    prompts = [(index, int(match[1])) for index, text in enumerate(starter) if (match := _PROMPT.match(text))]
    lines = []
    matcher = difflib.SequenceMatcher(None, starter, student, autojunk=False)
    for tag, i1, _i2, j1, j2 in matcher.get_opcodes():
        if tag not in ("insert", "replace"):
            continue
        todo = next((number for index, number in reversed(prompts) if index < i1 + (tag == "replace")), 0)
        for text in student[j1:j2]:
            if key := normalise(text, path):
                lines.append(Line(path, todo, text.rstrip(), key))
    return lines


def starter_files(lab: starters.Lab) -> dict[str, str]:
    """The starter's text files that hold a TODO prompt, by path."""
    files = {}
    for path, rendered in starters.render(ROOT / lab.solution).items():
        text = rendered.content.decode("utf-8", errors="replace")
        if any(_PROMPT.match(line) for line in text.splitlines()):
            files[path] = text
    return files


def read_work(student: str, stage: Path, starter: dict[str, str]) -> Work:
    """What a student's stage folder adds to each of the starter's TODO files."""
    work = Work(student)
    for path, text in starter.items():
        copy = stage / path
        if copy.is_file():
            work.lines += written_lines(text, copy.read_text(encoding="utf-8", errors="replace"), path)
    return work


@dataclass(frozen=True)
class Pair:
    """Two students whose written lines overlap: the share of the smaller one's, and the shared lines."""

    first: Work
    second: Work
    shared: frozenset[str]
    share: float


def common_keys(works: Sequence[Work]) -> set[str]:
    """The lines most of the class wrote (not counting the reference solution): no evidence of copying."""
    students = [work for work in works if work.student != REFERENCE]
    if len(students) < COMMON_MIN_CLASS:
        return set()
    counts = Counter(key for work in students for key in {line.key for line in work.lines})
    return {key for key, count in counts.items() if count > COMMON_SHARE * len(students)}


def similar_pairs(
    works: Sequence[Work], *, threshold: float, min_lines: int, starter_keys: frozenset[str] = frozenset()
) -> list[Pair]:
    """Every pair above both bars, the most similar first; `starter_keys` (the starter's own lines) never count."""
    left_out = common_keys(works) | starter_keys
    pairs = []
    for first, second in itertools.combinations(works, 2):
        a, b = first.keys(left_out), second.keys(left_out)
        shared = a & b
        if len(shared) >= min_lines and (share := len(shared) / min(len(a), len(b))) >= threshold:
            pairs.append(Pair(first, second, frozenset(shared), share))
    return sorted(pairs, key=lambda pair: (-pair.share, pair.first.student, pair.second.student))


def render_markdown(pairs: Sequence[Pair], works: Sequence[Work], threshold: float) -> str:
    """The report: the listed pairs, each with its shared lines as both students wrote them, by TODO."""
    lines = [
        "# Similarity report",
        "",
        f"{len(works)} submissions compared (names, strings, numbers and spacing aside); pairs sharing at least "
        f"{threshold:.0%} of the smaller one's written lines. A listed pair is a reason to look, not a verdict.",
        "",
    ]
    if not pairs:
        return "\n".join([*lines, "No pair above the threshold."]) + "\n"
    lines += ["| pair | shared lines | share |", "| --- | --- | --- |"]
    lines += [f"| {p.first.student} – {p.second.student} | {len(p.shared)} | {p.share:.0%} |" for p in pairs]
    for pair in pairs:
        lines += ["", f"## {pair.first.student} – {pair.second.student} ({pair.share:.0%})", ""]
        for work in (pair.first, pair.second):
            lines += [f"{work.student}:", "", "```"]
            lines += [f"{ln.path} (TODO {ln.todo}): {ln.text.strip()}" for ln in work.lines if ln.key in pair.shared]
            lines += ["```", ""]
    return "\n".join(lines) + "\n"


def starter_keys(starter: dict[str, str]) -> frozenset[str]:
    """Every line of the starter's TODO files, normalised: a student who only renames them wrote nothing."""
    return frozenset(
        key for path, text in starter.items() for line in text.splitlines() if (key := normalise(line, path))
    )


def write_report(
    works: Sequence[Work], out: Path, *, threshold: float, min_lines: int, starter: dict[str, str]
) -> list[Pair]:
    """Write similarity.md and similarity.csv into `out`; the pairs listed."""
    pairs = similar_pairs(works, threshold=threshold, min_lines=min_lines, starter_keys=starter_keys(starter))
    out.mkdir(parents=True, exist_ok=True)
    (out / "similarity.md").write_text(render_markdown(pairs, works, threshold), encoding="utf-8")
    with open(out / "similarity.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["first", "second", "shared_lines", "share"])
        writer.writerows([p.first.student, p.second.student, len(p.shared), f"{p.share:.3f}"] for p in pairs)
    return pairs


def class_work(
    stages: Iterable[tuple[str, Path]], lab: starters.Lab, starter: dict[str, str], *, reference: bool = True
) -> list[Work]:
    """Each student's work, from (student, stage folder) pairs, and the reference solution's when asked."""
    works = [read_work(student, stage, starter) for student, stage in stages]
    if reference and (ROOT / lab.solution).is_dir():
        rendered = starters.render(ROOT / lab.solution, only=set())
        solution = {path: file.content.decode("utf-8", "replace") for path, file in rendered.items()}
        work = Work(REFERENCE)
        for path, text in starter.items():
            work.lines += written_lines(text, solution.get(path, ""), path)
        works.append(work)
    return works


def class_report(
    submissions: Path,
    lab_name: str,
    out: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    min_lines: int = DEFAULT_MIN_LINES,
    reference: bool = True,
) -> list[Pair]:
    """Compare a folder of submissions (folders or zip files, as `grade_all` takes them); write the report."""
    from grader.batch import discover, prepared  # the batch module imports this one

    lab = next(lab for lab in starters.LABS if lab.name == lab_name)
    starter = starter_files(lab)
    with ExitStack() as stack:
        stages = []
        for submission in discover(submissions):
            try:
                stages.append((submission.student, stack.enter_context(prepared(submission))))
            except (zipfile.BadZipFile, ValueError, OSError):  # the gradebook says why it was not graded
                continue
        works = class_work(stages, lab, starter, reference=reference)
    return write_report(works, out, threshold=threshold, min_lines=min_lines, starter=starter)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the report for a folder of submissions."""
    parser = argparse.ArgumentParser(prog="python -m grader.similarity", description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, help="one folder or zip file per student")
    parser.add_argument("--lab", choices=[lab.name for lab in starters.LABS], required=True)
    parser.add_argument("--out", type=Path, default=Path("build/grades"), help="where the report goes")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="share of the smaller's lines")
    parser.add_argument("--min-lines", type=int, default=DEFAULT_MIN_LINES, help="shared lines at least")
    parser.add_argument("--no-reference", action="store_true", help="leave the reference solution out")
    args = parser.parse_args(argv)
    if not args.submissions.is_dir():
        parser.error(f"no such folder: {args.submissions}")
    pairs = class_report(
        args.submissions,
        args.lab,
        args.out,
        threshold=args.threshold,
        min_lines=args.min_lines,
        reference=not args.no_reference,
    )
    print(f"{len(pairs)} pair(s) above {args.threshold:.0%}: {args.out / 'similarity.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
