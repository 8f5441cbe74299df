"""The image's CMD run on this machine as compose would start it, with stand-ins for the services it talks to."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from docker import deployment as d
from tests.support.services import POSTGRES_HOST, POSTGRES_PORT, postgres_database, redis_server
from tests.support.stage import free_port, stop

DEMO_USER = {"username": "demo", "password": "demo-password"}
QUERY = {"query": "What is 12 * 7?"}
START_SECONDS = 90  # two workers migrating, seeding bcrypt hashes and compiling the graph, on a busy CI machine
# Series Prometheus makes itself for each target, and the labels it adds to every series it scrapes.
PROMETHEUS_SERIES, TARGET_LABELS = {"up"}, {"job", "instance"}


def check() -> list[str]:
    """Run the image's CMD from the image's files with the compose api's environment, against a throwaway
    redis-server, PostgreSQL database (SQLite when no server listens) and OTLP receiver; it must answer /health,
    both healthchecks, a login and an authenticated query with several workers, export spans, and export every
    metric the dashboard and the alerts name."""
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="docker-check-")))
        redis = stack.enter_context(redis_server())
        postgres = _listening(POSTGRES_HOST, POSTGRES_PORT)
        database = stack.enter_context(postgres_database()) if postgres else f"sqlite+aiosqlite:///{root / 'lab.db'}"
        sink = stack.enter_context(otlp_receiver())
        stand_ins = {"REDIS_URL": redis.url, "DATABASE_URL": database, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
        env, problems = container_env(stand_ins, free_port(), root / "prometheus-multiproc")
        if problems:
            return problems
        command = d.exec_form(d.runtime_stage(d.instructions()), "CMD")
        log = root / "api.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(  # noqa: S603 - the image's own command
                _here(command), cwd=lay_out_image(root / "image"), env=env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            problems, scrape = exercise(env, process)
        finally:
            stop(process)
        if not problems and "/v1/traces" not in sink.received:
            problems.append(f"no span reached the OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT={sink.url})")
        if problems:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            problems.append(f"the api ran on {'PostgreSQL' if postgres else 'SQLite'}; its log ends with:\n{tail}")
        return problems + (metrics_problems(scrape) if scrape else [])


def container_env(stand_ins: dict[str, str], port: int, multiproc: Path) -> tuple[dict[str, str], list[str]]:
    """The api container's environment (the image's ENV under compose's), with this machine's stand-ins for the
    compose services it names; and the problems if a setting names a service there is no stand-in for."""
    services = d.services()
    # SECRET_KEY is the one value a user must provide; every other variable keeps compose's default.
    variables = {"SECRET_KEY": secrets.token_urlsafe(32)}
    compose_env = {key: d.interpolate(value, variables) for key, value in d.environment(services["api"]).items()}
    env = {**d.image_env(d.runtime_stage(d.instructions())), **compose_env}
    problems = []
    for key, value in env.items():
        host = urlsplit(value).hostname if "://" in value else None
        if (host in services) != (key in stand_ins):
            problems.append(f"{key}={value}: only {', '.join(stand_ins)} may name compose services (stand-ins here)")
    # The image's PATH ($PATH of its virtual environment) is replaced by this machine's: python is this one.
    here = {key: value for key, value in env.items() if "$" not in value}
    here.update({key: os.environ[key] for key in ("PATH", "SYSTEMROOT", "TMPDIR") if key in os.environ})
    here.update(stand_ins, HOST="127.0.0.1", PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(multiproc))
    return here, problems


def lay_out_image(root: Path) -> Path:
    """Copy what the runtime stage COPYs from the build context (ignore file applied) under `root`, the image's
    file system; return its WORKDIR."""
    sent, workdir = d.context_files(), root
    for item in d.runtime_stage(d.instructions()):
        if item.keyword == "WORKDIR":
            workdir = root / item.args.lstrip("/") if item.args.startswith("/") else workdir / item.args
            workdir.mkdir(parents=True, exist_ok=True)
        for sources, target in d.copies([item]):
            destination = root / target.lstrip("/") if target.startswith("/") else workdir / target
            for source in sources:
                for file in (path for path in sent if path == source or path.startswith(f"{source}/")):
                    if file != source:  # a folder's files keep their place below it
                        copy = destination / Path(file).relative_to(source)
                    else:
                        copy = destination / Path(file).name if target.endswith(("/", ".")) else destination
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(d.CONTEXT / file, copy)
    return workdir


def exercise(env: dict[str, str], process: subprocess.Popen[bytes]) -> tuple[list[str], str]:
    """Wait for every worker, then check health, the healthchecks, a login and queries; the problems, and a
    scrape of the metrics ("" if the api never got that far)."""
    url, workers = f"http://127.0.0.1:{env['PORT']}", int(env["WORKERS"])
    problems = [] if workers >= 2 else [f"compose runs WORKERS={workers}: the demo needs several"]
    if failure := wait_for_workers(url, process, Path(env["PROMETHEUS_MULTIPROC_DIR"]), workers):
        return [*problems, failure], ""
    # No keep-alive: each request is a new connection, which any worker may accept.
    with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        health = client.get("/health")
        if health.status_code != 200 or health.json().get("status") != "healthy":
            problems.append(f"GET /health answered {health.status_code}: {health.text}")
        problems += healthchecks(env)
        login = client.post("/api/v1/auth/login", data=DEMO_USER)
        if login.status_code != 200:
            return [*problems, f"POST /api/v1/auth/login as demo answered {login.status_code}: {login.text}"], ""
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
        anonymous = client.post("/api/v1/query", json=QUERY)
        answers = [client.post("/api/v1/query", json=QUERY, headers=bearer) for _ in range(2)]
        scrape = client.get("/api/v1/metrics")
    if anonymous.status_code != 401:
        problems.append(f"POST /api/v1/query without a token answered {anonymous.status_code}, not 401")
    seen = [(answer.status_code, answer.headers.get("X-Cache")) for answer in answers]
    if seen != [(200, "MISS"), (200, "HIT")] or not answers[0].json().get("response"):
        problems.append(f"the same query twice answered {seen}: expected an answer (MISS), then the cached one (HIT)")
    return problems, scrape.text


def wait_for_workers(url: str, process: subprocess.Popen[bytes], multiproc: Path, workers: int) -> str | None:
    """None once /health answers and every worker has written its metric files; else what went wrong."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"the api exited with {process.returncode} before serving"
        # Each worker writes files named after its pid as soon as it builds the app.
        started = {path.stem.rsplit("_", 1)[-1] for path in multiproc.glob("*.db")}
        try:
            if len(started) >= workers and httpx.get(f"{url}/health", timeout=2).status_code < 500:
                return None
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return f"not serving with {workers} workers within {START_SECONDS} s"


def healthchecks(env: dict[str, str]) -> list[str]:
    """The image's HEALTHCHECK and compose's api healthcheck, run here, both succeed."""
    image = d.exec_form(d.runtime_stage(d.instructions()), "HEALTHCHECK")
    compose = d.services()["api"]["healthcheck"]["test"][1:]
    problems = []
    for where, command in (("the image's HEALTHCHECK", image), ("compose's api healthcheck", compose)):
        result = subprocess.run(_here(command), env=env, capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
        if result.returncode != 0:
            problems.append(f"{where} exited with {result.returncode}: {result.stderr.strip()[-500:]}")
    return problems


def metrics_problems(scrape: str) -> list[str]:
    """Each metric the dashboard and the alerts name is exported, with the labels their matchers use, and each
    metric exported appears on the dashboard."""
    families = list(text_string_to_metric_families(scrape))
    exported: dict[str, set[str]] = {}
    for sample in (sample for family in families for sample in family.samples):
        exported.setdefault(sample.name, set()).update(sample.labels)
    problems = []
    for where, expr in d.dashboard_queries() + d.alert_queries():
        for name, labels in d.series_named(expr):
            if name in PROMETHEUS_SERIES:
                continue
            if name not in exported:
                problems.append(f"{where}: the service exports no {name} (it exports {', '.join(sorted(exported))})")
            elif unknown := labels - exported[name] - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {', '.join(sorted(unknown))}")
    shown = {name for _, expr in d.dashboard_queries() for name, _ in d.series_named(expr)}
    for family in families:
        if not shown & {sample.name for sample in family.samples}:
            problems.append(f"the dashboard shows nothing of {family.name}")
    return list(dict.fromkeys(problems))  # a panel naming a metric twice reports it once


def _here(command: list[str]) -> list[str]:
    """An image command for this machine: its `python` is the interpreter running this check."""
    return [sys.executable, *command[1:]] if command[0] == "python" else command


def _listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


@dataclass
class Receiver:
    """Where the OTLP stand-in listens, and the paths exports were posted to."""

    url: str = ""
    received: list[str] = field(default_factory=list)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A stand-in for Jaeger's OTLP/HTTP receiver that accepts every export."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.received.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
            """Quiet: the check reports what matters."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
