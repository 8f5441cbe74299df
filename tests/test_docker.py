"""docker/: the image, the compose demo and its monitoring stack pass the checks of `nox -s docker_check`."""

from collections.abc import Callable
from pathlib import Path

import pytest

from docker import check, deployment, local_image
from tests.support.services import unavailable


def _problems(step: Callable[[], list[str]]) -> list[str]:
    """The step's problems; when a tool it needs is missing, the test is skipped (failed in CI)."""
    try:
        return step()
    except check.MissingToolError as missing:
        unavailable(str(missing))
        raise


def test_dockerfile_is_lint_clean_and_production_shaped() -> None:
    """hadolint passes at warning level; exact base tags, a slim non-root runtime, HEALTHCHECK, app.serve."""
    assert _problems(check.dockerfile) == []


def test_the_image_is_the_advanced_lab_s_own_dockerfile() -> None:
    """The api is built from solutions/advanced/Dockerfile (the lab's TODO 28) with that folder as its context,
    and the starter has the same Dockerfile up to the TODO and the same ignore file."""
    build = deployment.services()["api"]["build"]
    assert (deployment.DOCKER / build["context"]).resolve() == deployment.DOCKERFILE.parent == deployment.CONTEXT
    assert build.get("dockerfile", "Dockerfile") == deployment.DOCKERFILE.name
    starter = deployment.ROOT / "advanced_lab"
    assert (starter / ".dockerignore").read_text() == deployment.IGNORE_FILE.read_text()
    solution, todo = deployment.DOCKERFILE.read_text(), "# BEGIN SOLUTION TODO 28:"
    assert (starter / "Dockerfile").read_text().startswith(solution[: solution.index(todo)])


def test_build_context_holds_what_the_image_copies_and_nothing_secret() -> None:
    """Every COPY source reaches the builder; .env, databases, caches and environments do not."""
    assert _problems(check.build_context) == []


def test_compose_files_are_valid_and_documented() -> None:
    """Both compose files match the Compose Specification, and .env.example documents every variable."""
    assert _problems(check.compose) == []


def test_prometheus_configuration_rules_and_alert_tests_pass() -> None:
    """promtool checks the configuration and the rules, and runs the alerts' unit tests."""
    assert _problems(check.prometheus) == []


def test_grafana_provisioning_and_queries_are_valid() -> None:
    """The data source and dashboard are mounted where Grafana reads them; every panel query parses."""
    assert _problems(check.grafana) == []


@pytest.mark.service
def test_image_command_serves_with_the_compose_environment() -> None:
    """The image's CMD with compose's api environment serves health, login and queries with several workers,
    and exports every metric the dashboard and the alerts name."""
    assert _problems(check.image_run) == []


def test_metric_check_reports_what_the_service_does_not_export() -> None:
    """A scrape without the dashboard's metrics, or without a label an alert matches on, is reported."""
    scrape = '# TYPE http_requests_total counter\nhttp_requests_total{method="GET",endpoint="/"} 1.0\n'
    problems = local_image.metrics_problems(scrape)
    assert any("exports no cache_hits_total" in problem for problem in problems)
    assert any("AgentApiHighErrorRate: http_requests_total has no label status" in problem for problem in problems)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('sum by (le) (rate(a_bucket{x="1", y=~"b{2}"}[5m])) / b', [("a_bucket", {"x", "y"}), ("b", set())]),
        ("histogram_quantile(0.95, c) > 1e-9 and on(job) d offset 5m", [("c", set()), ("d", set())]),
    ],
)
def test_promql_names_are_found(expr: str, expected: list[tuple[str, set[str]]]) -> None:
    """Metric names and matcher labels are told apart from functions, keywords, grouping labels and numbers."""
    assert deployment.series_named(expr) == expected


@pytest.mark.parametrize(
    ("path", "is_ignored"),
    [("app", False), ("app/main.py", False), ("app/__pycache__/main.pyc", True), (".env", True), ("x/app", True)],
)
def test_ignore_file_semantics(tmp_path: Path, path: str, is_ignored: bool) -> None:
    """Docker's rules: a folder's pattern covers its files, ** spans folders, the last matching line wins."""
    (tmp_path / "ignore").write_text("*\n!app\n**/__pycache__\n")
    assert deployment.ignored(path, deployment.ignore_rules(tmp_path / "ignore")) is is_ignored


def test_compose_interpolation() -> None:
    """${VAR:-default} covers unset and empty, ${VAR-default} only unset, ${VAR:?error} refuses, $$ is $."""
    assert deployment.interpolate("${A:-x}/${B:-y}/${B-z}/$$A", {"B": ""}) == "x/y//$A"
    with pytest.raises(ValueError, match="A: needed"):
        deployment.interpolate("${A:?needed}", {})
