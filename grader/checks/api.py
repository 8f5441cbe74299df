"""The service's surface: /, /health, the docs and OpenAPI schema, the query answer and request ids."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from .. import hints
from ..context import DEMO_USERS, LOGIN_PATH, Context
from ..core import ADVANCED, check
from ..expect import Rules, field_problems, fields, json_object, nonce, show, status, that

ENDPOINTS = [
    ("get", "/"),
    ("get", "/health"),
    ("post", "/api/v1/query"),
    ("post", "/api/v1/query/stream"),
    ("get", "/api/v1/session/{}"),
    ("delete", "/api/v1/session/{}"),
    ("get", "/api/v1/sessions"),
    ("post", "/api/v1/tasks"),
    ("get", "/api/v1/tasks/{}"),
]
ADVANCED_ENDPOINTS = [("post", "/api/v1/auth/login"), ("get", "/api/v1/auth/me")]
FRAMEWORK_SCHEMAS = ("HTTPValidationError", "ValidationError")
# Each docs page, and what it must load to be more than a blank page.
DOCS_PAGES = {"/docs": ("script", "stylesheet"), "/redoc": ("script",)}
ASSET_TYPES = {"script": ("javascript", "a JavaScript content type"), "stylesheet": ("text/css", "text/css")}
FROM_A_CDN = (
    "FastAPI's default pages load Swagger UI and ReDoc from a CDN: without internet the browser shows a blank "
    "page. Serve them from the app (docs_url=None, redoc_url=None, then get_swagger_ui_html and get_redoc_html "
    "with local *_js_url and *_css_url, and the assets mounted)"
)
NO_USAGE = "the model calls' usage is not counted (a usage callback, e.g. UsageMetadataCallbackHandler)"
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QUERY_RESPONSE: Rules = {
    "response": (str, "a string"),
    "session_id": (str, "a string"),
    "execution_time": ((int, float), "a number of seconds"),
    "tokens_used": (int, "an integer"),
    "metadata": (dict, "an object"),
}


@check(1, public=True, hint=hints.SERVICE_ROUTES)
async def root(ctx: Context) -> None:
    """GET / answers 200 with name, version, docs_url and health_url."""
    body = json_object(await ctx.anon.get("/"))
    empty = [name for name in ("name", "version", "docs_url", "health_url") if not body.get(name)]
    that(not empty, "name, version, docs_url and health_url, each a non-empty string", f"empty or missing: {empty}")


@check(1, public=True, hint=hints.SERVICE_ROUTES)
async def health(ctx: Context) -> None:
    """GET /health answers 200 with status healthy, version, uptime_seconds and dependencies."""
    body = json_object(await ctx.anon.get("/health"))
    rules: Rules = {
        "version": (str, "a string"),
        "uptime_seconds": ((int, float), "seconds"),
        "dependencies": (dict, "{}"),
    }
    fields(body, rules, "a health answer")
    that(body.get("status") == "healthy", '"status": "healthy"', f'"status": {body.get("status")!r}')


@check(2, labs=ADVANCED, public=True, depends_on=("health",), hint=hints.HEALTH_DEPENDENCIES)
async def health_dependencies(ctx: Context) -> None:
    """GET /health reports redis, llm and database as up, each with latency_ms and detail."""
    dependencies = json_object(await ctx.anon.get("/health"))["dependencies"]
    for name in ("redis", "llm", "database"):
        entry = dependencies.get(name)
        that(isinstance(entry, dict), f"dependencies.{name} as an object", f"{entry!r}")
        # Redis and the database are probed, so their latency is measured; an offline model has none to time.
        latency: tuple[type, ...] = (int, float) if name != "llm" else (int, float, type(None))
        rules: Rules = {"status": (str, '"up"'), "latency_ms": (latency, "milliseconds"), "detail": (str, "text")}
        problems = field_problems(entry, rules) or ([] if entry["status"] == "up" else ["status is not up"])
        that(not problems, f"dependencies.{name} up, with latency_ms and detail", f"{entry} ({'; '.join(problems)})")


class _PageAssets(HTMLParser):
    """The scripts and stylesheets an HTML page loads, as (kind, URL) in the page's order."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "script" and attributes.get("src"):
            self.assets.append(("script", attributes["src"]))
        elif tag == "link" and "stylesheet" in attributes.get("rel", "").lower().split() and attributes.get("href"):
            self.assets.append(("stylesheet", attributes["href"]))


def _page_assets(page: httpx.Response) -> list[tuple[str, str]]:
    """Each script and stylesheet of the page, by kind and absolute URL (http and https ones only)."""
    parser = _PageAssets()
    parser.feed(page.text)
    found = [(kind, urljoin(str(page.url), url)) for kind, url in parser.assets]
    return [(kind, url) for kind, url in found if urlsplit(url).scheme in ("http", "https")]


@check(1, public=True, hint=hints.DOCS)
async def docs(ctx: Context) -> None:
    """GET /docs and /redoc work offline: every script and stylesheet they load is served by the service."""
    for page, needed in DOCS_PAGES.items():
        response = await ctx.anon.get(page)
        status(response, 200)
        that("text/html" in response.headers.get("content-type", ""), f"{page} as an HTML page", show(response))
        assets = _page_assets(response)
        here = urlsplit(str(response.url)).netloc
        elsewhere = [url for _, url in assets if urlsplit(url).netloc != here]
        that(
            not elsewhere,
            f"{page} loading its scripts and stylesheets from the service itself (offline, nothing else loads)",
            f"{page} loads {', '.join(elsewhere)}",
            cause=FROM_A_CDN,
        )
        kinds = {kind for kind, _ in assets}
        missing = [kind for kind in needed if kind not in kinds]
        that(not missing, f"{page} loading {' and '.join(needed)}", f"no {' and no '.join(missing)} in {page}'s HTML")
        for kind, url in assets:
            asset = await ctx.anon.get(url)
            wanted, label = ASSET_TYPES[kind]
            kind_served = asset.headers.get("content-type", "no content type").split(";")[0]
            that(
                asset.status_code == 200 and wanted in kind_served and asset.content,
                f"{page}'s {kind} {urlsplit(url).path} answering 200 with {label}",
                f"HTTP {asset.status_code} ({kind_served}), {len(asset.content)} bytes",
                cause=f"{page} names a {kind} the service does not serve: is the folder of assets mounted there?",
            )


async def _openapi(ctx: Context) -> dict[str, Any]:
    return json_object(await ctx.anon.get("/openapi.json"))


@check(2, public=True, hint=hints.OPENAPI_ROUTES)
async def openapi_endpoints(ctx: Context) -> None:
    """GET /openapi.json documents every endpoint of the contract."""
    paths = (await _openapi(ctx)).get("paths", {})
    documented = {(method, re.sub(r"\{[^}]*\}", "{}", path)) for path, item in paths.items() for method in item}
    wanted = ENDPOINTS + (ADVANCED_ENDPOINTS if ctx.lab == "advanced" else [])
    missing = [f"{method.upper()} {path}" for method, path in wanted if (method, path) not in documented]
    that(not missing, "every endpoint of the contract in the schema", f"missing: {', '.join(missing)}")


def _has_example(schema: dict[str, Any]) -> bool:
    if schema.get("example") is not None or schema.get("examples"):
        return True
    properties = schema.get("properties") or {}
    return bool(properties) and all("example" in p or p.get("examples") for p in properties.values())


@check(1, public=True, hint=hints.MODEL_EXAMPLES)
async def openapi_examples(ctx: Context) -> None:
    """Every model in /openapi.json carries an example, so /docs shows one."""
    schemas = (await _openapi(ctx)).get("components", {}).get("schemas", {})
    own = {n: s for n, s in schemas.items() if n not in FRAMEWORK_SCHEMAS and not n.startswith("Body_")}
    missing = sorted(name for name, schema in own.items() if "enum" not in schema and not _has_example(schema))
    that(own and not missing, "an example on every model", f"no example on: {', '.join(missing) or 'any model'}")


def _error_schema(spec: dict[str, Any], operation: dict[str, Any], code: str) -> dict[str, Any]:
    content = operation.get("responses", {}).get(code, {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    reference = schema.get("$ref", "")
    if reference.startswith("#/components/schemas/"):
        schema = spec.get("components", {}).get("schemas", {}).get(reference.rsplit("/", 1)[1], {})
    return dict(schema)


@check(1, public=True, hint=hints.ERROR_DOCS)
async def openapi_errors(ctx: Context) -> None:
    """/openapi.json documents the error answers as ErrorResponse (422 on /query, 404 on a session)."""
    spec = await _openapi(ctx)
    session = next(item for path, item in spec["paths"].items() if path.startswith("/api/v1/session/"))
    for label, operation, code in (
        ("POST /api/v1/query", spec["paths"]["/api/v1/query"]["post"], "422"),
        ("GET /api/v1/session/{session_id}", session["get"], "404"),
    ):
        properties = set(_error_schema(spec, operation, code).get("properties", {}))
        that(
            {"error", "detail", "request_id"} <= properties,
            f"{label} documents {code} with the ErrorResponse model",
            f"its {code} schema has properties {sorted(properties) or 'none'}",
        )


@check(3, hint=hints.QUERY)
async def query_shape(ctx: Context) -> None:
    """POST /api/v1/query answers 200 with a QueryResponse: response, session_id, execution_time, tokens_used."""
    body = json_object(await ctx.api.post("/api/v1/query", json={"query": f"Hello [{nonce()}]"}))
    fields(body, QUERY_RESPONSE, "a QueryResponse")
    that(body["response"].strip(), "a non-empty response", repr(body["response"]))
    that(SESSION_ID.match(body["session_id"]), "a session_id of 1-64 letters, digits, _ or -", body["session_id"])
    that(body["execution_time"] >= 0, "execution_time >= 0", str(body["execution_time"]))
    that(body["tokens_used"] > 0, "tokens_used > 0 for a real run", str(body["tokens_used"]), cause=NO_USAGE)
    metadata = body["metadata"]
    that(
        all(isinstance(metadata.get(name), str) for name in ("provider", "model"))
        and isinstance(metadata.get("agents"), list),
        "metadata with provider, model and agents (the agents visited)",
        f"metadata {metadata}",
    )


@check(2, depends_on=("query_shape",), hint=hints.TOKENS)
async def tool_use(ctx: Context) -> None:
    """ "What is 12 * 7?" is answered with 84, and the metadata shows the researcher or its calculator."""
    body = json_object(await ctx.api.post("/api/v1/query", json={"query": f"What is 12 * 7? [{nonce()}]"}))
    that("84" in body["response"], "an answer containing 84", repr(body["response"]))
    metadata = body["metadata"]
    used = "researcher" in metadata.get("agents", []) or "calculator" in metadata.get("tools_used", [])
    that(used, "metadata.agents with researcher (or tools_used with calculator)", f"metadata {metadata}")


@check(1, depends_on=("query_shape",), hint=hints.MAX_ITERATIONS)
async def max_iterations(ctx: Context) -> None:
    """max_iterations bounds the agent: with 1 step it cannot research, and still answers 200."""
    request = {"query": f"What is 12 * 7? [{nonce()}]", "max_iterations": 1}
    body = json_object(await ctx.api.post("/api/v1/query", json=request))
    that("84" not in body["response"], "an answer without the calculator's 84", repr(body["response"]))


@check(2, public=True, hint=hints.REQUEST_ID)
async def request_id(ctx: Context) -> None:
    """Every response carries X-Request-ID: the client's own when it is sane, a new one otherwise."""
    first, second = (await ctx.anon.get("/health")).headers, (await ctx.anon.get("/health")).headers
    ids = (first.get("x-request-id"), second.get("x-request-id"))
    that(all(ids) and ids[0] != ids[1], "a new X-Request-ID on each response", f"{ids}")
    sane = f"grader-{nonce()}"
    echoed = (await ctx.anon.get("/health", headers={"X-Request-ID": sane})).headers.get("x-request-id")
    that(echoed == sane, f"the client's X-Request-ID {sane!r} echoed", repr(echoed))
    for insane in ("a" * 300, "bad id <script>"):
        answered = (await ctx.anon.get("/health", headers={"X-Request-ID": insane})).headers.get("x-request-id")
        that(answered and answered != insane, f"a new id instead of {insane[:20]!r}", f"{answered!r:.60}")


@check(
    3,
    labs=ADVANCED,
    profile="redis_down",
    public=True,
    depends_on=("health_dependencies", "auth.login"),
    hint=hints.REDIS_DOWN,
)
async def redis_down(ctx: Context) -> None:
    """With Redis down, /health answers 200 degraded with redis down, and logged-in requests go on."""
    body = json_object(await ctx.anon.get("/health"), cause="Redis being down is not a reason to answer 503")
    redis = (body.get("dependencies") or {}).get("redis") or {}
    that(body.get("status") == "degraded", '"status": "degraded"', f'"status": {body.get("status")!r}')
    that(redis.get("status") == "down", 'dependencies.redis.status "down"', f"dependencies.redis {redis}")
    outage = "a request fails because Redis does (the rate limiter or the cache must fail open)"
    login = await ctx.anon.post(LOGIN_PATH, data={"username": "demo", "password": DEMO_USERS["demo"]})
    token = json_object(login, cause=outage).get("access_token", "")
    me = await ctx.anon.get("/api/v1/auth/me", headers=ctx.bearer(str(token)))
    status(me, 200, cause=outage)
