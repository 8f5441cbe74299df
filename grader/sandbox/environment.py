"""A stage's own virtual environment: built once per distinct requirements.txt with `uv`, then read-only and reused.

Built from uv's cache where it can (offline first, then from the package index), with bytecode compiled, since a
read-only environment cannot cache it at each start. Keyed by the requirements' text and the grader's Python, in
a folder every stage's user can read and none can write: under /var/cache when the grader runs as root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

BUILD_SECONDS = 600


class InstallError(Exception):
    """The stage's requirements could not be installed; carries uv's last lines."""


def cache_root() -> Path:
    if override := os.environ.get("GRADER_ENV_CACHE"):
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/agent-deploy-labs/grader-envs")
    return Path.home() / ".cache" / "agent-deploy-labs" / "grader-envs"


def base_python() -> str:
    """The interpreter the environments are made from: the one under the grader's own virtual environment."""
    return str(Path(getattr(sys, "_base_executable", sys.executable)).resolve())


def requirements(stage: Path) -> str:
    """The stage's requirements; a stage without any still needs the server it is run with."""
    path = stage / "requirements.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8", errors="replace")
    return f"uvicorn=={importlib.metadata.version('uvicorn')}\n"


REPOSITORY = Path(__file__).resolve().parents[2]


def _uv() -> str | None:
    """uv: named by $UV, on PATH, beside the grader's Python, its `uv` package, or the quickstart's .venv."""
    candidates = [os.environ.get("UV"), shutil.which("uv"), str(Path(sys.executable).with_name("uv"))]
    with contextlib.suppress(ImportError, FileNotFoundError):
        import uv  # type: ignore[import-not-found,unused-ignore]

        candidates.append(uv.find_uv_bin())
    candidates.append(str(REPOSITORY / ".venv" / "bin" / "uv"))
    return next((found for found in candidates if found and Path(found).is_file()), None)


def python(stage: Path) -> Path:
    """The interpreter of the environment for `stage`'s requirements, building it first if there is none."""
    wanted = requirements(stage)
    key = hashlib.sha256(f"{base_python()}\n{wanted}".encode()).hexdigest()[:20]
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # every stage's user reads the environments; only the grader writes
    folder = root / key
    if not (folder / "ready").is_file():
        with open(root / f"{key}.lock", "w") as lock:  # another grader (a class graded in parallel) may build it
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (folder / "ready").is_file():
                _build(folder, wanted)
    return folder / "bin" / "python"


def _build(folder: Path, wanted: str) -> None:
    if folder.exists():  # a build that was interrupted
        for path in (folder, *folder.rglob("*")):
            if not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.chmod(0o755)
        shutil.rmtree(folder, ignore_errors=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "UV_PYTHON"))}
    python = str(folder / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="grader-env-") as temp:
        pins = Path(temp) / "requirements.txt"
        pins.write_text(wanted, encoding="utf-8")
        uv = _uv()
        if uv is None:  # slower, from pip's cache
            _run([base_python(), "-m", "venv", str(folder)], env)
            _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(pins)], env)
        else:
            _run([uv, "venv", "--quiet", "--relocatable", "--python", base_python(), str(folder)], env)
            install = [uv, "pip", "install", "--quiet", "--python", python, "--link-mode", "copy"]
            install += ["--compile-bytecode", "-r", str(pins)]
            try:
                _run([*install, "--offline"], env)  # what uv's cache holds: no network, and fast
            except InstallError:
                _run(install, env)
    (folder / "ready").write_text("")
    _read_only(folder)


def _run(command: list[str], env: dict[str, str]) -> None:
    try:
        done = subprocess.run(  # noqa: S603 - uv with arguments we built
            command, env=env, capture_output=True, text=True, timeout=BUILD_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise InstallError(f"installing the requirements took more than {BUILD_SECONDS} s") from None
    if done.returncode:
        raise InstallError("\n".join((done.stderr or done.stdout).strip().splitlines()[-8:]))


def _read_only(folder: Path) -> None:
    """No write bit for anyone: a stage that runs as the grader's own user (no sandbox) cannot change it by mistake."""
    for path in (folder, *folder.rglob("*")):
        with contextlib.suppress(OSError):
            if not path.is_symlink():
                executable = path.is_dir() or path.stat().st_mode & stat.S_IXUSR
                path.chmod(0o555 if executable else 0o444)
