"""The grader's JSON report as GitHub Classroom's reporter reads it: `result=<base64 JSON>` for $GITHUB_OUTPUT."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATUS = {"passed": "pass", "failed": "fail", "skipped": "fail"}


def classroom(document: dict[str, Any] | None, max_score: int | None = None, reason: str = "") -> dict[str, Any]:
    """The runner result `autograding-grading-reporter` expects: version, status, max_score and tests[].

    The reporter adds up each test's `score` for the points; an ungradable stage is one `error` test with the
    lab's full `max_score`, so that GitHub Classroom records 0 out of the lab's total rather than nothing.
    """
    if document is None or document.get("error"):
        error = reason or (document or {}).get("error", "") or "the grader wrote no report"
        tail = (document or {}).get("log_tail", "")
        test = {"name": "the stage can be graded", "status": "error", "score": 0, "message": f"{error}\n{tail}"}
        return {"version": 1, "status": "error", "max_score": max_score or 0, "tests": [test]}
    tests = [
        {
            "name": f"{item['id']}: {item['title']}",
            "status": STATUS[item["status"]],
            "score": item["points"],
            "message": item["feedback"] or "passed",
            "line_no": 0,
            "execution_time": f"{item.get('duration_seconds', 0):.2f}s",
            "test_code": item["id"],
        }
        for item in document["checks"]
    ]
    status = "pass" if all(test["status"] == "pass" for test in tests) else "fail"
    return {"version": 1, "status": status, "max_score": document["max_score"] or max_score or 0, "tests": tests}


def output_line(result: dict[str, Any]) -> str:
    """`result=...`: the step output the reporter decodes (base64, so that it stays one line)."""
    return "result=" + base64.b64encode(json.dumps(result).encode("utf-8")).decode("ascii")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.github.classroom_result", description=__doc__)
    parser.add_argument("report", type=Path, help="the grader's --format json report")
    parser.add_argument("--max-score", type=int, help="the lab's total, reported when the stage was not gradable")
    args = parser.parse_args(argv)
    try:
        document: dict[str, Any] | None = json.loads(args.report.read_text(encoding="utf-8"))
        reason = ""
    except (OSError, ValueError) as error:
        document, reason = None, f"the grader wrote no readable report ({type(error).__name__}: {error})"
    result = classroom(document, args.max_score, reason)
    print(output_line(result))
    points = sum(test["score"] for test in result["tests"])
    print(f"GitHub Classroom: {points:g}/{result['max_score']} points ({result['status']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
