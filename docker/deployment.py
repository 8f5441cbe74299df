"""What docker/'s files say, read without Docker: the Dockerfile, its build context, compose, the monitoring queries."""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

DOCKER = Path(__file__).resolve().parent
ROOT = DOCKER.parent
CONTEXT = ROOT / "solutions" / "advanced"  # the api image's build context (docker-compose.yml says so too)
# The image is part of the lab (its TODO is in the Dockerfile), so both files live in the solution's folder.
DOCKERFILE = CONTEXT / "Dockerfile"
IGNORE_FILE = CONTEXT / ".dockerignore"
COMPOSE, SCALE = DOCKER / "docker-compose.yml", DOCKER / "docker-compose.scale.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "agent-api.json"
ALERTS = DOCKER / "prometheus" / "alerts.yml"


class _ComposeLoader(yaml.SafeLoader):  # type: ignore[misc]
    """YAML as compose reads it: `!reset` (an override file's way to drop a value) empties the value it tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: {"sequence": [], "mapping": {}}.get(node.id))


def load_yaml(path: Path) -> Any:
    """A YAML file of docker/, compose's `!reset` tag included."""
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # noqa: S506 - a SafeLoader with one more tag


# --- The Dockerfile and its build context ---------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: FROM, RUN, COPY..."""

    keyword: str
    args: str


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """The instructions, continuation lines joined and comments dropped."""
    found, pending = [], ""
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        keyword, _, args = (pending + text).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return found


def runtime_stage(items: list[Instruction]) -> list[Instruction]:
    """The last stage: what the image is."""
    start = max(index for index, item in enumerate(items) if item.keyword == "FROM")
    return items[start:]


def image_env(stage: list[Instruction]) -> dict[str, str]:
    """The ENV of a stage (KEY=VALUE form)."""
    pairs = (word.partition("=") for item in stage if item.keyword == "ENV" for word in shlex.split(item.args))
    return {key: value for key, _, value in pairs}


def exec_form(stage: list[Instruction], keyword: str) -> list[str]:
    """The JSON-array command of CMD, or of HEALTHCHECK's CMD."""
    args = next(item.args for item in reversed(stage) if item.keyword == keyword)
    return [str(word) for word in json.loads(args[args.index("[") :])]


def copies(stage: list[Instruction]) -> list[tuple[list[str], str]]:
    """Each COPY from the build context in the stage: its sources and its destination."""
    found = []
    for item in stage:
        words = shlex.split(item.args)
        if item.keyword == "COPY" and not any(word.startswith("--from") for word in words):
            *sources, target = [word for word in words if not word.startswith("--")]
            found.append(([posixpath.normpath(source) for source in sources], target))
    return found


IgnoreRules = list[tuple[re.Pattern[str], bool]]


def ignore_rules(path: Path = IGNORE_FILE) -> IgnoreRules:
    """The ignore file's patterns as (regex, is an exception) pairs, in Docker's (moby/patternmatcher) syntax."""
    rules = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if text and not text.startswith("#"):
            pattern = posixpath.normpath(text.removeprefix("!").strip()).lstrip("/")
            rules.append((re.compile(_glob_regex(pattern)), text.startswith("!")))
    return rules


def _glob_regex(pattern: str) -> str:
    regex, index = "", 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            index += 3 if pattern.startswith("**/", index) else 2
            regex += ".*" if index >= len(pattern) else "(.*/)?"  # any number of folders, none included
            continue
        char = pattern[index]
        regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
        index += 1
    return regex


def ignored(path: str, rules: IgnoreRules) -> bool:
    """Whether the builder never sees `path`: the last pattern that matches it, or a folder above it, decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:count]) for count in range(1, len(parts) + 1)]
    verdict = False
    for regex, exception in rules:
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not exception
    return verdict


def context_files() -> list[str]:
    """The files of the build context that the builder receives (paths relative to it)."""
    rules = ignore_rules()
    everything = (path.relative_to(CONTEXT).as_posix() for path in CONTEXT.rglob("*") if path.is_file())
    return sorted(path for path in everything if not ignored(path, rules))


# --- Compose --------------------------------------------------------------------------------------------------

VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default} and ${VAR:?error} substitution, and $$ for $."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        value = variables.get(name)
        missing = value is None or (op.startswith(":") and not value)
        if missing and op.endswith("?"):
            raise ValueError(f"{name}: {arg}")
        return arg if missing and op.endswith("-") else value or ""

    return VARIABLE.sub(substitute, value).replace("$$", "$")


def env_example() -> dict[str, str]:
    """docker/.env.example's variables and values."""
    lines = (DOCKER / ".env.example").read_text().splitlines()
    pairs = (line.partition("=") for line in lines if re.match(r"[A-Z][A-Z0-9_]*=", line))
    return {key: value.strip().strip("\"'") for key, _, value in pairs}


def services(*files: Path) -> dict[str, Any]:
    """The services of the compose files (docker-compose.yml alone by default), later files merged over earlier
    as compose does for mappings (key by key); any other value a later file gives replaces the earlier one."""
    merged: dict[str, Any] = {}
    for path in files or (COMPOSE,):
        merged = _merge(merged, load_yaml(path)["services"])
    return merged


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        both_mappings = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if both_mappings else value
    return merged


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose also allows a list of KEY=VALUE)."""
    raw = service.get("environment") or {}
    pairs = raw.items() if isinstance(raw, dict) else (entry.split("=", 1) for entry in raw)
    return {str(key): "" if value is None else str(value) for key, value in pairs}


def mounted(service: dict[str, Any], container_path: str) -> Path | None:
    """Where in docker/ the file or folder is that a bind mount puts at `container_path`, if one does."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith(".") and (container_path == target or container_path.startswith(f"{target}/")):
            return (DOCKER / source / container_path.removeprefix(target).lstrip("/")).resolve()
    return None


# --- The monitoring queries -------------------------------------------------------------------------------------


def alert_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule."""
    rules = [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]
    return [(f"alert {rule['alert']}", str(rule["expr"])) for rule in rules]


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every query of every panel of the dashboard."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(f"panel {panel['title']!r}", str(query["expr"])) for panel in panels for query in panel.get("targets", [])]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"\d[\w.]*|([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "inf", "nan"}


def series_named(expr: str) -> list[tuple[str, set[str]]]:
    """The metric names a PromQL expression selects, each with the label names its matchers use."""
    text, found = _STRING.sub('""', expr), []

    def selector(match: re.Match[str]) -> str:
        if match[1]:
            found.append((match[1], set(_MATCHER_LABEL.findall(match[2]))))
        return " "

    text = _GROUPING.sub(" ", re.sub(r"\[[^\]]*\]", " ", _SELECTOR.sub(selector, text)))
    # What is left: functions (a name then "("), keywords, numbers and durations, and bare metric names.
    for match in _TOKEN.finditer(text):
        if match[1] and not match[2] and match[1] not in _KEYWORDS:
            found.append((match[1], set()))
    return found
