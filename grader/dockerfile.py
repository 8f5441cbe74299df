"""A stage's Dockerfile as the grader reads it (never builds it): the final stage's ENV, USER, EXPOSE,
HEALTHCHECK and command, and that command as this machine runs it."""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

NAME = "Dockerfile"
_PYTHON = re.compile(r"python(\d+(\.\d+)?)?")
# Servers a CMD may name instead of python: each runs here as `python -m <name>`.
_SERVERS = ("uvicorn", "gunicorn")
_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


class DockerfileError(Exception):
    """The stage has no readable Dockerfile, or its final stage gives no command this machine can run."""


@dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined: its keyword (upper case), arguments and first line."""

    keyword: str
    args: str
    line: int


@dataclass
class Image:
    """What the final stage says about the container: its settings, user, ports, health probe and command."""

    env: dict[str, str] = field(default_factory=dict)
    user: str = ""  # the last USER; "" when the stage sets none, and the container runs as root
    exposed: list[str] = field(default_factory=list)  # the ports of EXPOSE, without /tcp
    healthcheck: str = ""  # HEALTHCHECK's arguments; "" when there is none (or NONE)
    command: list[str] = field(default_factory=list)  # ENTRYPOINT then CMD, each in exec form
    command_problem: str = ""  # why there is no command to run

    @property
    def runs_as_root(self) -> bool:
        return self.user.split(":", 1)[0].strip() in {"", "root", "0"}


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile's text; comments and blank lines dropped, continuations joined."""
    found: list[Instruction] = []
    pending, first = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # a comment may sit between continuation lines; Docker drops it too
        first = first or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), args.strip(), first))
        pending, first = "", 0
    return found


def _env_pairs(args: str) -> list[tuple[str, str]]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # the legacy form: ENV NAME value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [(key, value) for key, _, value in (word.partition("=") for word in words)]


def _substitute(value: str, env: dict[str, str]) -> str:
    """$NAME and ${NAME} from the stage's earlier ENV instructions; anything else stays as written."""
    return _VARIABLE.sub(lambda match: env.get(match[1] or match[2], match[0]), value)


def _exec_form(item: Instruction) -> list[str] | None:
    try:
        words = json.loads(item.args)
    except json.JSONDecodeError:
        return None
    ok = isinstance(words, list) and words and all(isinstance(word, str) for word in words)
    return [str(word) for word in words] if ok else None


def parse(text: str) -> Image:
    """The final stage of a Dockerfile's text (DockerfileError without any FROM)."""
    items = instructions(text)
    starts = [index for index, item in enumerate(items) if item.keyword == "FROM"]
    if not starts:
        raise DockerfileError("it has no FROM instruction, so it describes no image")
    found = Image()
    commands: dict[str, Instruction] = {}
    for item in items[starts[-1] :]:
        if item.keyword == "ENV":
            before = dict(found.env)  # as Docker does: one ENV's variables come from the instructions before it
            found.env |= {key: _substitute(value, before) for key, value in _env_pairs(item.args)}
        elif item.keyword == "USER":
            found.user = item.args
        elif item.keyword == "EXPOSE":
            found.exposed += [port.split("/", 1)[0] for port in item.args.split()]
        elif item.keyword == "HEALTHCHECK":
            found.healthcheck = "" if item.args.upper() == "NONE" else item.args
        elif item.keyword in ("CMD", "ENTRYPOINT"):
            commands[item.keyword] = item
    for keyword in ("ENTRYPOINT", "CMD"):
        if keyword in commands:
            words = _exec_form(commands[keyword])
            if words is None:
                line = commands[keyword].line
                found.command_problem = f"its {keyword} (line {line}) is not in exec form (a JSON array of strings)"
                return found
            found.command += words
    if not found.command:
        found.command_problem = "its final stage has no CMD: the container would run the base image's python shell"
    return found


def read(stage: Path) -> Image:
    """The stage's Dockerfile, read (DockerfileError when it is missing, unreadable or has no FROM)."""
    path = stage / NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DockerfileError(f"there is no {NAME} in the stage folder") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DockerfileError(f"{NAME} cannot be read: {error}") from None
    try:
        return parse(text)
    except ValueError as error:  # shlex: an unterminated quote in an ENV
        raise DockerfileError(f"{NAME} cannot be parsed: {error}") from None


def local_command(found: Image) -> list[str]:
    """The image's command for this machine: its `python` (or server) is the interpreter running the grader."""
    if found.command_problem:
        raise DockerfileError(found.command_problem)
    program, *args = found.command
    name = PurePosixPath(program).name
    if _PYTHON.fullmatch(name):
        return [sys.executable, *args]
    if name in _SERVERS:
        return [sys.executable, "-m", name, *args]
    raise DockerfileError(
        f"its command starts with {program!r}: the grader runs the command with its own Python, so it must start"
        f" with python or {' or '.join(_SERVERS)}"
    )


def container_env(found: Image, settings: dict[str, str]) -> dict[str, str]:
    """The image's ENV under the grading settings. PATH, and values still naming a variable, stay this machine's."""
    env = {key: value for key, value in found.env.items() if key != "PATH" and "$" not in value}
    return env | settings
