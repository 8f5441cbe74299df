"""The grading profiles: each server start's settings, and the local endpoints some of them talk to."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import dockerfile, postgres
from .runner import HOST, StageStartError, free_port, refusing_port

# The offline model's latency in every profile but `limits`: small enough for a fast grade, large enough
# that a streamed answer of ~28 tokens takes ~0.5 s, which a buffered response cannot fake.
FIRST_TOKEN_DELAY_MS = 30
TOKEN_DELAY_MS = 8
# The `limits` profile: a small rate limit with a window longer than a grade, and an agent that times out.
RATE_LIMIT = 20
RATE_LIMIT_WINDOW = 300
AGENT_TIMEOUT_SECONDS = 1
SLOW_FIRST_TOKEN_DELAY_MS = 1500


@dataclass(frozen=True)
class Profile:
    """One way of starting the stage; the checks that need it run against that server."""

    name: str
    purpose: str
    settings: dict[str, str] = field(default_factory=dict)
    failing_llm: bool = False
    redis_down: bool = False
    collector: bool = False
    database: str = ""  # whose database folder to use: another profile's name, or its own when empty
    image: bool = False  # started as the stage's Dockerfile says (its CMD, with its ENV), not as uvicorn
    serial: bool = False  # its checks run one after another: they count the requests the server gets
    # DATABASE_URL names a throwaway database on GRADER_DATABASE_URL's PostgreSQL server (its own, or with
    # `database` the other profile's); only a grade given a server has checks on such a profile.
    postgres: bool = False


PROFILES = {
    "main": Profile("main", "offline model with a known latency, no practical rate limit"),
    "limits": Profile(
        "limits",
        f"rate limit {RATE_LIMIT} per {RATE_LIMIT_WINDOW} s; agent timeout {AGENT_TIMEOUT_SECONDS} s, slower model",
        {
            "RATE_LIMIT_REQUESTS": str(RATE_LIMIT),
            "RATE_LIMIT_WINDOW": str(RATE_LIMIT_WINDOW),
            "AGENT_TIMEOUT_SECONDS": str(AGENT_TIMEOUT_SECONDS),
            "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": str(SLOW_FIRST_TOKEN_DELAY_MS),
        },
        serial=True,
    ),
    "upstream": Profile("upstream", "LLM_PROVIDER=openai against a provider that always fails", failing_llm=True),
    "redis_down": Profile("redis_down", "REDIS_URL points at a port where no Redis listens", redis_down=True),
    "restart": Profile(
        "restart",
        "a restart on the main start's database, with tracing on to the grader's OTLP collector",
        # Export spans within a fraction of a second instead of the SDK's default 5 s.
        {"TRACING_ENABLED": "true", "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_SERVICE_NAME": "graded-stage"},
        collector=True,
        database="main",
    ),
    "postgres": Profile("postgres", "DATABASE_URL on a throwaway database of the grader's PostgreSQL", postgres=True),
    "postgres_restart": Profile(
        "postgres_restart", "a restart on the postgres start's database", database="postgres", postgres=True
    ),
    "image": Profile(
        "image",
        "the Dockerfile's CMD with its ENV and WORKERS, on the grader's HOST, PORT and settings",
        image=True,
        serial=True,
    ),
}


def base_settings(secret_key: str, database: Path) -> dict[str, str]:
    """Every setting the checks rely on, stated explicitly so that a stray .env cannot change the grade."""
    return {
        "ENVIRONMENT": "test",
        "DEBUG": "false",
        "API_PREFIX": "/api/v1",
        "WORKERS": "1",
        "LLM_PROVIDER": "offline",
        "OFFLINE_LLM_FIRST_TOKEN_DELAY_MS": str(FIRST_TOKEN_DELAY_MS),
        "OFFLINE_LLM_TOKEN_DELAY_MS": str(TOKEN_DELAY_MS),
        "AGENT_TIMEOUT_SECONDS": "30",
        "REDIS_ENABLED": "true",
        "REDIS_URL": "memory://",
        "SECRET_KEY": secret_key,
        "ALGORITHM": "HS256",
        "ACCESS_TOKEN_EXPIRE_MINUTES": "30",
        "RATE_LIMIT_ENABLED": "true",
        "RATE_LIMIT_REQUESTS": "100000",
        "RATE_LIMIT_WINDOW": "60",
        "CACHE_ENABLED": "true",
        "CACHE_TTL": "300",
        "METRICS_ENABLED": "true",
        "TRACING_ENABLED": "false",
        "LANGSMITH_TRACING": "false",
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "json",
        "DATABASE_URL": f"sqlite+aiosqlite:///{database / 'grader.db'}",
        "PYTHONUNBUFFERED": "1",  # so the log file has every line as soon as it is written
    }


@dataclass
class Setup:
    """A start's settings, and what the grader's OTLP collector received while the stage ran."""

    env: dict[str, str]
    spans: list[bytes] = field(default_factory=list)
    command: list[str] | None = None  # the image's command; None: uvicorn app.main:app


@asynccontextmanager
async def prepared(profile: Profile, secret_key: str, data: Path, stage: Path) -> AsyncIterator[Setup]:
    """The settings for one start with `profile`; the local endpoints it needs run while the block does."""
    database = data / (profile.database or profile.name)
    database.mkdir(parents=True, exist_ok=True)
    setup = Setup(base_settings(secret_key, database) | profile.settings)
    if profile.image:
        setup = _image_setup(stage, setup.env, database)
    async with AsyncExitStack() as stack:
        if profile.failing_llm:
            base_url = await stack.enter_async_context(local_http(lambda head, body: _PROVIDER_FAILURE))
            setup.env |= {
                "LLM_PROVIDER": "openai",
                "OPENAI_API_KEY": "sk-grader-not-a-real-key",
                "OPENAI_BASE_URL": f"{base_url}/v1",
                "OPENAI_MAX_RETRIES": "0",
                "AGENT_TIMEOUT_SECONDS": "10",
            }
        if profile.collector:
            setup.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = await stack.enter_async_context(local_http(_collect(setup)))
        if profile.redis_down:
            setup.env["REDIS_URL"] = f"redis://{HOST}:{stack.enter_context(refusing_port())}/0"
        if profile.postgres:
            setup.env["DATABASE_URL"] = await stack.enter_async_context(_postgres_database(profile, data))
        yield setup


@asynccontextmanager
async def _postgres_database(profile: Profile, data: Path) -> AsyncIterator[str]:
    """The profile's database on the grader's PostgreSQL server, named after this grade's data folder: made by
    the first start that uses it, dropped by the start on another's database (a restart), or by its only one."""
    server = postgres.server()
    owner = profile.database or profile.name
    name = postgres.database_name(data.name, owner)
    shared = any(other.database == owner for other in PROFILES.values())
    try:
        url = await postgres.create(server, name)
    except postgres.DatabaseServerError as error:
        raise StageStartError(
            f"the grader's PostgreSQL server ({postgres.SERVER_VARIABLE}) made no database: {error}", ""
        ) from None
    try:
        yield url
    finally:
        if profile.database or not shared:
            await postgres.drop(server, name)


def _image_setup(stage: Path, settings: dict[str, str], folder: Path) -> Setup:
    """The image's command, and its ENV under the grading settings but with its own WORKERS. The metrics folder
    (PROMETHEUS_MULTIPROC_DIR) is the grader's: each worker writes its files there, named after its pid."""
    try:
        image = dockerfile.read(stage)
        command = dockerfile.local_command(image)
    except dockerfile.DockerfileError as error:
        raise StageStartError(f"the stage's {dockerfile.NAME} gives no command to run: {error}", "") from None
    grading = {key: value for key, value in settings.items() if key != "WORKERS"}
    local = {"HOST": HOST, "PORT": str(free_port()), "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus")}
    return Setup(dockerfile.container_env(image, grading | local), command=command)


def _answer(status: str, body: bytes, kind: str) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


_PROVIDER_FAILURE = _answer(
    "500 Internal Server Error",
    b'{"error": {"message": "The grader\'s provider fails on purpose.", "type": "server_error", "code": null}}',
    "application/json",
)


def _collect(setup: Setup) -> Callable[[bytes, bytes], bytes]:
    """An OTLP/HTTP trace receiver: keep each export's (protobuf) body, answer an empty success."""

    def receive(head: bytes, body: bytes) -> bytes:
        if re.search(rb"^content-encoding:\s*gzip", head, re.IGNORECASE | re.MULTILINE):
            body = gzip.decompress(body)
        setup.spans.append(body)
        return _answer("200 OK", b"", "application/x-protobuf")

    return receive


_CONTENT_LENGTH = re.compile(rb"^content-length:\s*(\d+)\s*$", re.IGNORECASE | re.MULTILINE)


@asynccontextmanager
async def local_http(respond: Callable[[bytes, bytes], bytes]) -> AsyncIterator[str]:
    """A minimal HTTP/1.1 endpoint on 127.0.0.1: `respond(head, body)` makes each raw answer. Yields its URL."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                length = _CONTENT_LENGTH.search(head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(respond(head, body))
                await writer.drain()
        except (OSError, TimeoutError, EOFError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent something this endpoint does not read
        finally:
            writer.close()

    server = await asyncio.start_server(answer, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}"
    finally:
        server.close()
        await server.wait_closed()
