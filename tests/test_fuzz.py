"""Property-based fuzzing of both solutions' OpenAPI with schemathesis, each solution a real uvicorn process.

For every operation, schemathesis generates valid requests and invalid ones (wrong types, out-of-range values,
malformed bodies, odd Unicode, NUL bytes). Every answer must not be a 5xx, must have a status code, content type
and body that the schema documents for it, and, when it is an error, be an ErrorResponse whose request_id is the
X-Request-ID header, with no traceback (in the answer or in the log). The advanced service is fuzzed logged in
(and schemathesis checks that dropping or spoiling the token is refused), as the disabled user, and logged out.

The examples are derandomised, so CI runs the same ones every time; `FUZZ_EXAMPLES=500` explores further.
"""

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.stage import ROOT, StageProcess, run_stage

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "50"))
# Not schemathesis's negative_data_rejection: the contract strips control characters from a query *before* its
# length is checked, so a string over 4000 characters that is mostly control characters is rightly accepted.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
FAST = {
    "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "0",
    "OFFLINE_LLM_TOKEN_DELAY_MS": "0",
    "RATE_LIMIT_REQUESTS": "1000000",
    "LOG_LEVEL": "WARNING",
}
MEDIUM_OPERATIONS = {
    "GET /",
    "GET /health",
    "POST /api/v1/query",
    "POST /api/v1/query/stream",
    "GET /api/v1/session/{session_id}",
    "DELETE /api/v1/session/{session_id}",
    "GET /api/v1/sessions",
    "POST /api/v1/tasks",
    "GET /api/v1/tasks/{task_id}",
}
ADVANCED_OPERATIONS = MEDIUM_OPERATIONS | {"POST /api/v1/auth/login", "GET /api/v1/auth/me", "GET /api/v1/metrics"}


@pytest.fixture(scope="module")
def medium() -> Iterator[StageProcess]:
    with run_stage(ROOT / "solutions" / "medium", FAST) as stage:
        yield stage


@pytest.fixture(scope="module")
def advanced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StageProcess]:
    database = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    env = {**FAST, "DATABASE_URL": f"sqlite+aiosqlite:///{database}", "BCRYPT_ROUNDS": "4", "SECRET_KEY": "fuzz-key"}
    with run_stage(ROOT / "solutions" / "advanced", env) as stage:
        yield stage


def _bearer(stage: StageProcess, username: str = "demo") -> dict[str, str]:
    form = {"username": username, "password": f"{username}-password"}
    token = httpx.post(f"{stage.url}/api/v1/auth/login", data=form, timeout=30).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def _header(response: Any, name: str) -> list[str]:
    return [value for key, values in response.headers.items() if key.lower() == name for value in values]


def _assert_error_body_and_request_id(response: Any) -> None:
    """Beyond the schema: one sane X-Request-ID on every answer; an error names it and carries no traceback."""
    ids = _header(response, "x-request-id")
    assert len(ids) == 1 and SANE_REQUEST_ID.match(ids[0]), f"X-Request-ID: {ids}"
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail", "request_id"}, body
        assert body["request_id"] == ids[0]
        assert "Traceback" not in response.text


def _fuzz(stage: StageProcess, headers: dict[str, str], examples: int, checks: list[Any]) -> tuple[set[str], list[str]]:
    """Fuzz every operation in both generation modes; the operations reached and the failures, one per line."""
    schema = schemathesis.openapi.from_url(f"{stage.url}/openapi.json")
    reached, failures = set(), []
    for result in schema.get_all_operations():
        operation = result.ok()
        reached.add(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _run_examples(operation.as_strategy(mode), examples, headers, checks)
            except Unsatisfiable:
                continue  # nothing to make invalid: the operation takes no input
            except (FailureGroup, AssertionError) as failure:
                failures.append(f"{operation.label} ({mode.value}): {failure}")
    return reached, failures


def _run_examples(strategy: Any, examples: int, headers: dict[str, str], checks: list[Any]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call_and_validate(headers=headers, checks=checks, timeout=30)
        _assert_error_body_and_request_id(response)

    run()


def _report(failures: list[str]) -> str:
    return "\n\n".join(failure[:3000] for failure in failures)


def test_medium_api_survives_fuzzing(medium: StageProcess) -> None:
    """Every operation of the medium solution answers valid and invalid input as its OpenAPI schema documents."""
    reached, failures = _fuzz(medium, {}, EXAMPLES, CHECKS)
    assert reached == MEDIUM_OPERATIONS
    assert not failures, _report(failures)
    assert "Traceback" not in medium.log(), "an error was hidden (a stream's error event?) but logged a traceback"


def test_advanced_api_survives_fuzzing_logged_in_and_out(advanced: StageProcess) -> None:
    """The same for the advanced solution, with a demo user's token (auth must be enforced: without the token, or
    with a spoiled one, the same request is refused), then with the disabled user's token (403) and with none."""
    reached, failures = _fuzz(advanced, _bearer(advanced), EXAMPLES, [*CHECKS, ignored_auth])
    failures += _fuzz(advanced, _bearer(advanced, "inactive"), max(EXAMPLES // 5, 5), CHECKS)[1]
    failures += _fuzz(advanced, {}, max(EXAMPLES // 5, 5), CHECKS)[1]
    assert reached == ADVANCED_OPERATIONS
    assert not failures, _report(failures)
    assert "Traceback" not in advanced.log(), "an error was hidden (a stream's error event?) but logged a traceback"


def _operations(stage: StageProcess) -> Iterator[tuple[str, str, dict[str, Any]]]:
    schema = httpx.get(f"{stage.url}/openapi.json", timeout=30).json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            yield path, method.upper(), operation


def _undocumented(stage: StageProcess, expected: Callable[[str, str, dict[str, Any]], set[int]]) -> list[str]:
    """Each operation's error statuses that can happen but are missing from its schema, or lack ErrorResponse."""
    problems = []
    error_schema = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, method, operation in _operations(stage):
        responses = operation["responses"]
        missing = sorted(code for code in expected(path, method, operation) if str(code) not in responses)
        if missing:
            problems.append(f"{method} {path} does not document {missing}")
        for code, response in responses.items():
            json_schema = response.get("content", {}).get("application/json", {}).get("schema")
            if int(code) >= 400 and path != "/health" and json_schema != error_schema:
                problems.append(f"{method} {path} documents {code} without an application/json ErrorResponse")
    return problems


def _can_answer(path: str, method: str, operation: dict[str, Any], *, advanced: bool) -> set[int]:
    codes: set[int] = set()
    if path.startswith("/api/v1/") and path != "/api/v1/metrics":
        codes.add(429)  # the rate limit
    if "requestBody" in operation:
        codes |= {400, 422} | ({413} if advanced else set())
    if "{" in path:
        codes |= {404, 422}
    if operation.get("security"):
        codes |= {401, 403}
    if path.startswith("/api/v1/query"):
        codes |= {502, 504}
    return codes


@pytest.mark.parametrize("lab", ["medium", "advanced"])
def test_every_error_a_route_can_answer_is_documented(lab: str, request: pytest.FixtureRequest) -> None:
    """Statuses the fuzzer rarely meets are documented too: 429 on every limited route, 400/422 (and 413) where there
    is a body, 404/422 with a path id, 401/403 where a token is needed, 502/504 where the agent runs."""
    stage: StageProcess = request.getfixturevalue(lab)
    assert _undocumented(stage, lambda *op: _can_answer(*op, advanced=lab == "advanced")) == []
