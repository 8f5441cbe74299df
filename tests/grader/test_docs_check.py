"""The grader's `api.docs` check: /docs and /redoc pass only when every script and stylesheet comes from the service.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, which offline leaves a blank page; the check
must fail them (it used to pass any HTML page), and say what the page loads from where.
"""

from pathlib import Path

from grader.core import CheckResult, Lab
from tests.grader.stages.advanced import MINI
from tests.support.grading import broken_copy, explain, grade_stage
from tests.support.stage import ROOT

MEDIUM_MAIN = "app/main.py"
# The medium solution as it was before app/docs.py: FastAPI's own pages, from the CDN.
MEDIUM_CDN_PAGES = {
    MEDIUM_MAIN: [
        ("        docs_url=None,  # app/docs.py serves /docs and /redoc, without a CDN\n        redoc_url=None,\n", ""),
        ("    install_docs(app)\n", ""),
    ]
}


def _docs_result(stage: Path, lab: Lab) -> CheckResult:
    report = grade_stage(stage, lab, ("api.docs",))
    assert [result.check.id for result in report.results] == ["api.docs"], explain(report)
    return report.results[0]


def test_the_stand_in_stage_serving_its_own_assets_passes() -> None:
    """The stand-in advanced stage, whose pages load Swagger UI and ReDoc from itself, passes api.docs."""
    result = _docs_result(MINI, "advanced")
    assert result.status == "passed", result.feedback


def test_fastapis_cdn_pages_fail_and_name_what_they_load_from_where(tmp_path: Path) -> None:
    """The medium solution with FastAPI's default pages fails api.docs, naming the CDN's scripts and the fix."""
    copy = broken_copy(ROOT / "solutions" / "medium", tmp_path / "cdn-pages", MEDIUM_CDN_PAGES)
    result = _docs_result(copy, "medium")
    assert result.status == "failed", result.feedback
    assert result.points == 0
    assert "/docs loads https://" in result.observed, result.feedback
    assert "swagger-ui-bundle.js" in result.observed, result.feedback
    assert "127.0.0.1" not in result.observed, result.feedback
    assert "CDN" in result.cause and "get_swagger_ui_html" in result.cause, result.feedback
    assert "app/docs.py" in result.hint, result.feedback


def test_pages_naming_assets_the_service_does_not_serve_fail(tmp_path: Path) -> None:
    """Local script and style URLs that answer 404 (the assets are not mounted) fail api.docs, naming the file."""
    unmounted = {
        "app/docs.py": [
            (
                '    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-static")\n',
                "",
            )
        ]
    }
    copy = broken_copy(MINI, tmp_path / "unmounted", unmounted)
    result = _docs_result(copy, "advanced")
    assert result.status == "failed", result.feedback
    assert "/docs-static/swagger-ui" in result.expected, result.feedback
    assert result.observed.startswith("HTTP 404"), result.feedback


def test_a_redoc_page_loading_from_a_cdn_fails_even_when_docs_is_local(tmp_path: Path) -> None:
    """/redoc is checked as /docs is: the ReDoc script from a CDN fails api.docs."""
    cdn_redoc = {"app/docs.py": [('            redoc_js_url=f"{ASSETS}/redoc.standalone.js",\n', "")]}
    copy = broken_copy(MINI, tmp_path / "cdn-redoc", cdn_redoc)
    result = _docs_result(copy, "advanced")
    assert result.status == "failed", result.feedback
    assert result.observed.startswith("/redoc loads https://"), result.feedback
    assert "redoc.standalone.js" in result.observed, result.feedback
