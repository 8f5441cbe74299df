"""Bad input against both solutions, each a real uvicorn process: wrong content types, malformed JSON, Unicode
edge cases, huge ids, and header injection through X-Request-ID (sent on a raw socket, as an attacker would).

Never a 5xx; each refusal an ErrorResponse; and text that is accepted comes back exactly as the contract says.
The medium lab sets no limit on the size of a request body (the reverse proxy's job there, as its lab sheet says);
the advanced lab does (MAX_REQUEST_BYTES, 413), tested here over a real socket.
"""

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.stage import ROOT, run_stage

SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
FAST = {"OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": "0", "OFFLINE_LLM_TOKEN_DELAY_MS": "0", "RATE_LIMIT_REQUESTS": "100000"}
MAX_REQUEST_BYTES = 4096


@dataclass
class Service:
    """A running stage and the headers that let a client in."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Both solutions, running for the whole module; the advanced one with a small body limit."""
    database = tmp_path_factory.mktemp("bad-input") / "bad.db"
    advanced_env = {
        **FAST,
        "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "BCRYPT_ROUNDS": "4",
        "SECRET_KEY": "bad-input",
        "MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "LOG_LEVEL": "WARNING",
    }
    with ExitStack() as stack:
        medium = stack.enter_context(run_stage(ROOT / "solutions" / "medium", FAST))
        advanced = stack.enter_context(run_stage(ROOT / "solutions" / "advanced", advanced_env))
        form = {"username": "demo", "password": "demo-password"}
        token = httpx.post(f"{advanced.url}/api/v1/auth/login", data=form, timeout=30).json()["access_token"]
        yield {"medium": Service(medium.url), "advanced": Service(advanced.url, {"Authorization": f"Bearer {token}"})}


@pytest.fixture(params=["medium", "advanced"])
def service(request: pytest.FixtureRequest, services: dict[str, Service]) -> Service:
    return services[request.param]


@pytest.fixture
def advanced(services: dict[str, Service]) -> Service:
    return services["advanced"]


def _post(service: Service, path: str, content: bytes, content_type: str | None) -> httpx.Response:
    headers = dict(service.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.post(f"{service.url}{path}", content=content, headers=headers, timeout=30)


def _assert_refused(response: httpx.Response, *statuses: int) -> None:
    assert response.status_code in statuses, f"{response.status_code}: {response.text[:300]}"
    body = response.json()
    assert set(body) == {"error", "detail", "request_id"}, body
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"query": "hi"}', "text/plain"),
        (b'{"query": "hi"}', "application/xml"),
        (b"query=hi", "application/x-www-form-urlencoded"),
        (
            b'--b\r\nContent-Disposition: form-data; name="query"\r\n\r\nhi\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
        ),
        (b'{"query": "hi"}', "application/jsonx"),
        (b'{"query": "hi"}', "image/png"),
        (b'{"query": "hi"}', "no/such;;type=="),
        ('{"query": "caf\u00e9"}'.encode("latin-1"), "application/json; charset=latin-1"),
    ],
    ids=["text", "xml", "form", "multipart", "not-quite-json", "image", "garbled-type", "latin-1"],
)
def test_wrong_content_types_are_refused_with_an_error_response(
    service: Service, content: bytes, content_type: str
) -> None:
    """A body that is not JSON by its Content-Type or its bytes is a 4xx ErrorResponse on every body route."""
    for path in ("/api/v1/query", "/api/v1/query/stream", "/api/v1/tasks"):
        _assert_refused(_post(service, path, content, content_type), 400, 415, 422)


@pytest.mark.parametrize(
    "content",
    [
        b'{"query": "hi"',
        b'{"query": "hi"}}',
        b"[]",
        b'"just a string"',
        b"null",
        b"",
        b'{"query": 42}',
        b'{"query": ["hi"]}',
        b'{"query": "hi", "max_iterations": 1e999}',
        b'{"query": "hi", "max_iterations": "five"}',
        b'{"query": "hi", "session_id": null, "stream": "yes please"}',
        b'{"query": "\xff\xfe"}',
        b"[" * 1800 + b"]" * 1800,  # deeper than Python's recursion limit, within the advanced body limit
        b'{"query": "hi", "query": "' + b"x" * 10 + b'", "extra": {"nested": [1, 2, {"deep": true}]}, "query": ""}',
    ],
    ids=[
        "unterminated",
        "trailing-brace",
        "array",
        "string",
        "null",
        "empty",
        "number",
        "list",
        "infinite-number",
        "word-for-number",
        "wrong-types",
        "invalid-utf8",
        "deep-nesting",
        "duplicate-keys-last-empty",
    ],
)
def test_malformed_json_is_a_4xx_error_response(service: Service, content: bytes) -> None:
    """Broken, mistyped or hostile JSON is a 400/422 ErrorResponse, never a 5xx or a hang."""
    _assert_refused(_post(service, "/api/v1/query", content, "application/json"), 400, 422)


def _sanitised(text: str) -> str:
    """What the contract keeps of a query: control characters other than tab and newline removed, then stripped."""
    return re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text).strip()


@pytest.mark.parametrize(
    "query",
    [
        "\u202eevil.exe\u202c and \u200fRTL\u200e marks",
        "family \U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 and flags \U0001f1fa\U0001f1e6",
        "e\u0301 combining, \ufeff BOM inside, \u2028line\u2029para, \U0010ffff last plane",
        "NUL\x00 bell\x07 escape\x1b[31m C1\x85\x9b kept\ttab\nnewline",
        "שלום مرحبا こんにちは Привет",
        "  surrounding space and zero width\u200b  ",
    ],
    ids=["bidi-overrides", "emoji-sequences", "combining-and-separators", "control-characters", "scripts", "spaces"],
)
def test_unicode_edge_cases_are_kept_exactly_or_removed_as_documented(service: Service, query: str) -> None:
    """Bidi overrides, emoji sequences, combining marks, separators and other scripts are stored as sent; control
    characters (NUL included) are removed: the session holds exactly the sanitised query, JSON and SSE stay valid."""
    response = httpx.post(f"{service.url}/api/v1/query", json={"query": query}, headers=service.headers, timeout=30)
    assert response.status_code == 200, response.text
    sid = response.json()["session_id"]
    stream = httpx.post(
        f"{service.url}/api/v1/query/stream",
        json={"query": query, "session_id": sid},
        headers=service.headers,
        timeout=30,
    )
    assert stream.status_code == 200
    data = [json.loads(line[6:]) for line in stream.text.splitlines() if line.startswith("data: ")]
    assert data[-1]["type"] == "done"
    session = httpx.get(f"{service.url}/api/v1/session/{sid}", headers=service.headers, timeout=30).json()
    assert [m["content"] for m in session["messages"] if m["role"] == "user"] == [_sanitised(query)] * 2


@pytest.mark.parametrize(
    "raw",
    [b'{"query": "\\ud800 lone high surrogate"}', b'{"query": "\\udfff"}', b'{"query": "ok", "session_id": "\\udc80"}'],
    ids=["high-surrogate", "low-surrogate", "surrogate-session-id"],
)
def test_lone_surrogates_are_422(service: Service, raw: bytes) -> None:
    """A JSON escape for half a UTF-16 pair is not text: 422, not a 500 when the answer is encoded."""
    _assert_refused(_post(service, "/api/v1/query", raw, "application/json"), 422)


def test_huge_and_strange_session_ids_are_refused(service: Service) -> None:
    """Session ids over 64 characters, with path tricks or non-ASCII digits: 422 (or 404), in the body or the path."""
    for session_id in ["a" * 65, "x" * 3000, "../../etc/passwd", "١٢٣", "abc def", "a\u200bb"]:
        response = httpx.post(
            f"{service.url}/api/v1/query",
            json={"query": "hi", "session_id": session_id},
            headers=service.headers,
            timeout=30,
        )
        _assert_refused(response, 422)
    for path in ["a" * 65, "b" * 8000, "%2e%2e%2f%2e%2e%2fetc", "%00", "%C0%AF", "\u0661\u0662"]:
        _assert_refused(
            httpx.get(f"{service.url}/api/v1/session/{path}", headers=service.headers, timeout=30), 404, 422
        )
    # Past what the HTTP server reads as a request line, uvicorn itself refuses: still no 5xx.
    huge = _raw_request(service, [], target=b"/api/v1/session/" + b"c" * 100_000)
    assert 400 <= huge.status < 500


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]


def _raw_request(service: Service, header_lines: list[bytes], target: bytes = b"/") -> RawResponse:
    """GET with the header lines given verbatim (no client library would send most of these)."""
    start = b"GET " + target + b" HTTP/1.1"
    request = b"\r\n".join([start, b"Host: 127.0.0.1", b"Connection: close", *header_lines, b"", b""])
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        deadline = time.monotonic() + 10
        while (chunk := sock.recv(65536)) and time.monotonic() < deadline:
            received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    fields = [tuple(part.strip() for part in line.split(":", 1)) for line in head[1:]]
    return RawResponse(int(head[0].split()[1]), [(name.lower(), value) for name, value in fields])  # type: ignore[misc]


@pytest.mark.parametrize(
    "header_lines",
    [
        [b"X-Request-ID: abc\r\nX-Injected: yes"],
        [b"X-Request-ID: abc%0d%0aX-Injected:%20yes"],
        [b"X-Request-ID: abc\\r\\nX-Injected: yes"],
        [b"X-Request-ID: " + b"a" * 129],
        [b"X-Request-ID: " + b"b" * 20_000],
        ["X-Request-ID: r\u00e9sum\u00e9-\u2603".encode()],
        ["X-Request-ID: caf\u00e9".encode("latin-1")],
        [b"X-Request-ID: <script>alert(1)</script>"],
        [b"X-Request-ID: with space"],
        [b"X-Request-ID: "],
        [b"X-Request-ID: one", b"X-Request-ID: two"],
        [b"X-Request-ID: abc\x00def"],
        [b"X-Request-ID: abc", b" X-Injected: folded"],
    ],
    ids=[
        "crlf",
        "encoded-crlf",
        "escaped-crlf",
        "129-chars",
        "20k-chars",
        "utf8",
        "latin1",
        "markup",
        "space",
        "empty",
        "twice",
        "nul",
        "obs-fold",
    ],
)
def test_request_id_header_injection_never_reaches_the_response(service: Service, header_lines: list[bytes]) -> None:
    """Whatever a client puts in X-Request-ID, the answer is not a 5xx, carries no header the client smuggled in, and
    echoes at most one X-Request-ID, a sane one (the client's only if it was sane itself)."""
    response = _raw_request(service, header_lines)
    assert response.status < 500
    names = [name for name, _ in response.headers]
    assert "x-injected" not in names
    ids = [value for name, value in response.headers if name == "x-request-id"]
    assert len(ids) <= 1
    if response.status < 400:  # answered by the app, not refused by the HTTP server before it
        assert len(ids) == 1 and SANE_REQUEST_ID.match(ids[0]), ids
        # What the server read as X-Request-ID values (a CRLF ends a header line, so it splits one in two).
        lines = [line for sent in header_lines for line in sent.split(b"\r\n")]
        offered = [line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"x-request-id:")]
        echoed = ids[0].encode()
        assert all(value == echoed or echoed not in value for value in offered), "part of an insane id was echoed"


def test_advanced_refuses_bodies_over_the_limit_on_a_real_socket(advanced: Service) -> None:
    """MAX_REQUEST_BYTES holds on a real connection: a declared length over it is refused before the body is sent,
    and a chunked body that grows past it is cut off with 413."""
    service = advanced
    token = service.headers["Authorization"].encode()
    declared = [b"Content-Type: application/json", b"Content-Length: 10000000", b"Authorization: " + token]
    started = time.monotonic()
    refused = _raw_post(service, declared, b"")
    assert refused.status == 413
    assert time.monotonic() - started < 5, "the server waited for a body it should refuse"
    body = b'{"query": "' + b"x" * (MAX_REQUEST_BYTES * 2) + b'"}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in _pieces(body, 1000)) + b"0\r\n\r\n"
    streamed = [b"Content-Type: application/json", b"Transfer-Encoding: chunked", b"Authorization: " + token]
    assert _raw_post(service, streamed, chunked).status == 413
    ok = httpx.post(f"{service.url}/api/v1/query", json={"query": "hi"}, headers=service.headers, timeout=30)
    assert ok.status_code == 200


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def _raw_post(service: Service, header_lines: list[bytes], body: bytes) -> RawResponse:
    head = [b"POST /api/v1/query HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *header_lines, b"", b""]
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(head) + body)
        received = b""
        deadline = time.monotonic() + 10
        try:
            while (chunk := sock.recv(65536)) and time.monotonic() < deadline:
                received += chunk
        except ConnectionResetError:
            pass  # the server may close while unread body bytes are still in flight: the answer came first
    status_line = received.split(b"\r\n", 1)[0].decode("latin-1")
    return RawResponse(int(status_line.split()[1]), [])


def test_advanced_login_with_bad_forms_is_a_4xx(advanced: Service) -> None:
    """The login form sent as JSON, without a password, or with a username as long as the body allows: 4xx."""
    login = f"{advanced.url}/api/v1/auth/login"
    _assert_refused(httpx.post(login, json={"username": "demo", "password": "demo-password"}, timeout=30), 422)
    _assert_refused(httpx.post(login, data={"username": "demo"}, timeout=30), 422)
    long_name: dict[str, Any] = {"username": "u" * (MAX_REQUEST_BYTES - 100), "password": "x"}
    _assert_refused(httpx.post(login, data=long_name, timeout=30), 401)
    too_long: dict[str, Any] = {"username": "u" * (MAX_REQUEST_BYTES + 100), "password": "x"}
    _assert_refused(httpx.post(login, data=too_long, timeout=30), 413)
