"""The similarity report finds a planted copy in a class, renamed and reformatted, and lists no honest pair."""

from __future__ import annotations

import csv
import re
import zipfile
from pathlib import Path

from grader import similarity, starters

MEDIUM = starters.LABS[0]
SOLUTION = similarity.ROOT / MEDIUM.solution
NUMBERS = [todo.number for todo in starters.todos(SOLUTION)]
LATER = set(NUMBERS[8:])  # alice did the first eight TODOs
RENAMES = {"value": "text", "session_id": "sid", "request": "req", "settings": "cfg", "chunk": "piece"}

# Carol's own sanitiser and session lock: the same behaviour, written her way.
CAROL = {
    "app/models.py": (
        "        return value\n",
        "        if not isinstance(value, str):\n"
        "            return value\n"
        "        kept = [c for c in value if c in '\\n\\t' or ord(c) >= 32 and ord(c) != 127]\n"
        "        return ''.join(kept).strip()\n",
    ),
    "app/sessions.py": (
        "        return asyncio.Lock()\n",
        "        if session_id not in self._locks:\n"
        "            self._locks[session_id] = asyncio.Lock()\n"
        "        found = self._locks[session_id]\n"
        "        return found\n",
    ),
}


def _write(files: dict[str, starters.RenderedFile], folder: Path) -> Path:
    starters.write_tree(files, folder)
    return folder


def _disguised(text: str) -> str:
    """The same code with other names, other spacing and comments of its own: what a copier hands in."""
    for old, new in RENAMES.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text.replace("(", "( ").replace(" = ", "  =  ").replace("\n\n", "\n\n# my own work\n")


def _class(tmp_path: Path) -> Path:
    """alice did the first eight TODOs with the solution's code; bob hands in alice's, disguised, as a zip; carol
    wrote the sanitiser and the session lock her own way; dave did nothing; erin hands in the reference solution;
    frank's zip is broken."""
    submissions = tmp_path / "submissions"
    alice = _write(starters.render(SOLUTION, only=LATER), submissions / "alice")
    bob = _write(starters.render(SOLUTION, only=LATER), tmp_path / "bob")
    for path in bob.rglob("*.py"):
        path.write_text(_disguised(path.read_text()))
    with zipfile.ZipFile(submissions / "bob.zip", "w") as archive:
        for path in bob.rglob("*"):
            archive.write(path, Path("bob-lab") / path.relative_to(bob))
    carol = _write(starters.render(SOLUTION), submissions / "carol")
    for path, (placeholder, own) in CAROL.items():
        text = (carol / path).read_text()
        assert placeholder in text, path
        (carol / path).write_text(text.replace(placeholder, own, 1))
    _write(starters.render(SOLUTION), submissions / "dave")
    _write(starters.render(SOLUTION, only=set()), submissions / "erin")
    (submissions / "frank.zip").write_bytes(b"not a zip file")  # the gradebook reports it; the comparison skips it
    assert (alice / "app" / "main.py").is_file()
    return submissions


def test_a_planted_copy_is_listed_with_its_shared_lines_and_honest_work_is_not(tmp_path: Path) -> None:
    """bob's renamed, reformatted copy of alice's work is listed with both students' lines; carol's own answers
    and dave's untouched starter are in no pair; erin's handed-in solution is listed against (solution)."""
    out = tmp_path / "grades"
    assert similarity.main([str(_class(tmp_path)), "--lab", "medium", "--out", str(out)]) == 0
    with open(out / "similarity.csv", encoding="utf-8") as file:
        pairs = {frozenset((row["first"], row["second"])): float(row["share"]) for row in csv.DictReader(file)}
    assert pairs.get(frozenset({"alice", "bob"}), 0) >= 0.9, pairs
    assert frozenset({"erin", similarity.REFERENCE}) in pairs, pairs
    assert not [pair for pair in pairs if "carol" in pair or "dave" in pair], pairs
    report = (out / "similarity.md").read_text()
    section = report.split("## alice – bob", 1)[1].split("\n## ", 1)[0]
    assert "self._locks.setdefault(session_id, asyncio.Lock())" in section  # alice's line as she wrote it
    assert "self._locks.setdefault( sid, asyncio.Lock( ))" in section  # and bob's, as he disguised it


def test_normalising_ignores_names_strings_numbers_spacing_and_comments() -> None:
    """Two lines that differ only in names, literals and spacing compare equal; a comment counts as nothing."""
    a = similarity.normalise("    total = compute(items, 'x', 3)  # sum", "app/a.py")
    b = similarity.normalise('total_sum=compute( values ,"y" , 42 )', "app/a.py")
    assert a == b == "N = N ( N , S , 0 )"
    assert similarity.normalise("   # only a comment", "app/a.py") == ""
    assert similarity.normalise("return None if x else y", "app/a.py") == "return None if N else N"  # None is a keyword


def test_a_class_with_nothing_alike_gets_an_empty_report(tmp_path: Path) -> None:
    """With no pair above the threshold the report says so and the CSV has only its header."""
    starter = similarity.starter_files(MEDIUM)
    works = [similarity.Work("a"), similarity.Work("b")]
    assert similarity.write_report(works, tmp_path, threshold=0.6, min_lines=5, starter=starter) == []
    assert "No pair above the threshold." in (tmp_path / "similarity.md").read_text()
    assert (tmp_path / "similarity.csv").read_text().strip() == "first,second,shared_lines,share"


def _work(student: str, keys: list[str]) -> similarity.Work:
    return similarity.Work(student, [similarity.Line("app/x.py", 1, key, key) for key in keys])


def test_what_most_of_a_large_class_wrote_is_no_evidence() -> None:
    """In a class of 12, lines that 7 wrote are the obvious way; only the pair sharing lines of their own is listed."""
    obvious = [f"obvious {n}" for n in range(6)]
    works = [_work(f"s{n:02d}", (obvious if n < 7 else []) + [f"own {n} {k}" for k in range(6)]) for n in range(12)]
    works[1].lines += _work("copy", [f"own 0 {k}" for k in range(6)]).lines
    pairs = similarity.similar_pairs(works, threshold=0.6, min_lines=5)
    assert [(p.first.student, p.second.student) for p in pairs] == [("s00", "s01")]
    assert pairs[0].shared == frozenset(f"own 0 {k}" for k in range(6))
