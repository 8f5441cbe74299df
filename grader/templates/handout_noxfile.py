"""Your lab's tasks, from this folder: `.venv/bin/nox -s serve -- LAB_DIR`, `grade -- LAB_DIR`, `labtests -- LAB_DIR`.

Set up once as README.md's Quickstart says (`python3 -m venv .venv`, then nox and uv at the versions it pins);
each task makes its own environment from the pins in this repository (the lab folder's `requirements.txt`, and
`.grader/`). The lab's reference tests stay with the course: `labtests` runs the tests you write.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
GRADER = ROOT / ".grader"
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True


def _stage(session: nox.Session) -> Path:
    """The lab folder named after `--`, checked to look like one."""
    if not session.posargs:
        session.error("name your lab folder, for example: .venv/bin/nox -s serve -- LAB_DIR")
    stage = (Path(session.invoked_from) / session.posargs[0]).resolve()
    if not (stage / "app" / "main.py").is_file():
        session.error(f"{stage} is not a lab folder: it has no app/main.py")
    return stage


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@nox.session
def serve(session: nox.Session) -> None:
    """Run your lab on http://127.0.0.1:8000: `.venv/bin/nox -s serve -- LAB_DIR [--port N]`."""
    stage, args = _stage(session), list(session.posargs[1:])
    port = 8000
    if "--port" in args:
        at = args.index("--port")
        port = int(args[at + 1])
        del args[at : at + 2]
    if not _port_is_free(port):
        session.error(f"port {port} on 127.0.0.1 is taken: pick another with --port {port + 1}, or stop its server")
    session.install("-r", str(stage / "requirements.txt"))
    session.chdir(stage)
    session.run("uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *args)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade your lab as your instructor's grader does: `.venv/bin/nox -s grade -- LAB_DIR` (exit 0, 1 or 2)."""
    stage = _stage(session)
    session.install("-r", str(GRADER / "requirements.txt"), *map(str, sorted(GRADER.glob("*.whl"))))
    session.install("-r", str(stage / "requirements.txt"))
    session.chdir(session.invoked_from)
    with tempfile.TemporaryDirectory(prefix="grade-") as folder:
        # A partial grade (1) is an answer, not a failed command: the session exits with the grader's status.
        status = Path(folder) / "status"
        env = {"GRADER_STATUS_FILE": str(status)}
        session.run("python", "-m", "grader", *session.posargs, env=env, success_codes=[0, 1, 2], interrupt_timeout=30)
        code = int(status.read_text()) if status.is_file() else 2
    if code:
        raise SystemExit(code)


@nox.session
def labtests(session: nox.Session) -> None:
    """Your own tests of your lab: `.venv/bin/nox -s labtests -- LAB_DIR` runs LAB_DIR/tests with pytest."""
    stage = _stage(session)
    tests = stage / "tests"
    if not tests.is_dir():
        session.log(
            "%s has no tests/ folder yet; `.venv/bin/nox -s grade -- %s` checks your work", stage.name, stage.name
        )
        return
    session.install("-r", str(GRADER / "requirements.txt"))
    session.install("-r", str(stage / "requirements.txt"))
    session.chdir(stage)
    session.run("pytest", str(tests), *session.posargs[1:], env={"PYTHONPATH": str(stage)})
