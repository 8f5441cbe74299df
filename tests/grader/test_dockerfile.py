"""How the grader reads a stage's Dockerfile: the final stage's settings, user, ports, probe and command."""

import sys
import textwrap
from pathlib import Path

import pytest

from grader import dockerfile
from grader.dockerfile import DockerfileError
from tests.support.stage import ROOT

SOLUTION, STARTER = ROOT / "solutions" / "advanced", ROOT / "advanced_lab"


def _parse(text: str) -> dockerfile.Image:
    return dockerfile.parse(textwrap.dedent(text))


def test_the_solution_s_image_is_read_as_docker_would_run_it() -> None:
    """Its final stage: ENV, the non-root USER, EXPOSE 8000, a HEALTHCHECK and python -m app.serve."""
    image = dockerfile.read(SOLUTION)
    assert {key: image.env[key] for key in ("HOST", "PORT", "WORKERS")} == {
        "HOST": "0.0.0.0",
        "PORT": "8000",
        "WORKERS": "2",
    }
    assert (image.user, image.runs_as_root, image.exposed) == ("10001:10001", False, ["8000"])
    assert image.healthcheck.startswith("--interval=") and "CMD" in image.healthcheck
    assert image.command == ["python", "-m", "app.serve"]
    assert dockerfile.local_command(image) == [sys.executable, "-m", "app.serve"]
    assert "PATH" not in dockerfile.container_env(image, {}), "this machine's PATH, not the image's virtualenv"


def test_the_starter_s_image_has_no_command_yet() -> None:
    """Before TODO 28 the final stage has no CMD; that is the reason given, not a crash."""
    image = dockerfile.read(STARTER)
    assert image.runs_as_root and not image.healthcheck
    with pytest.raises(DockerfileError, match="no CMD"):
        dockerfile.local_command(image)


def test_only_the_final_stage_counts_and_later_instructions_win() -> None:
    """USER, ENV and CMD of an earlier stage do not carry over; continuations and comments are handled."""
    image = _parse(
        """\
        FROM python:3.11 AS build
        USER builder
        ENV WORKERS=8
        CMD ["python", "-m", "build"]
        FROM python:3.11-slim
        # a comment between continuation lines is dropped
        ENV APP=/app \\
            # like this one
            SAME=$APP
        ENV LOG="$APP/log" HOME=${APP}
        ENV LEGACY some words here
        USER 0
        EXPOSE 8000/tcp 9000
        HEALTHCHECK NONE
        ENTRYPOINT ["uvicorn"]
        CMD ["app.main:app"]
        """
    )
    # Like Docker: an ENV sees the variables of the ENV instructions before it, not its own.
    assert image.env == {"APP": "/app", "SAME": "$APP", "LOG": "/app/log", "HOME": "/app", "LEGACY": "some words here"}
    assert (image.user, image.runs_as_root, image.exposed, image.healthcheck) == ("0", True, ["8000", "9000"], "")
    assert image.command == ["uvicorn", "app.main:app"]
    assert dockerfile.local_command(image) == [sys.executable, "-m", "uvicorn", "app.main:app"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("FROM python:3.11\nCMD python -m app.serve\n", "not in exec form"),
        ('FROM python:3.11\nCMD ["sh", "-c", "python -m app.serve"]\n', "must start with python"),
        ("FROM python:3.11\nUSER app\n", "no CMD"),
    ],
)
def test_a_command_the_grader_cannot_run_says_why(text: str, reason: str) -> None:
    """A shell-form CMD, a command that is not Python, or none at all: each is a DockerfileError naming it."""
    with pytest.raises(DockerfileError, match=reason):
        dockerfile.local_command(dockerfile.parse(text))


def test_a_missing_or_unreadable_dockerfile_is_an_error_not_a_crash(tmp_path: Path) -> None:
    """No Dockerfile, one without FROM, and one that cannot be tokenised each raise DockerfileError."""
    with pytest.raises(DockerfileError, match="no Dockerfile"):
        dockerfile.read(tmp_path)
    (tmp_path / "Dockerfile").write_text("RUN echo hello\n")
    with pytest.raises(DockerfileError, match="no FROM"):
        dockerfile.read(tmp_path)
    (tmp_path / "Dockerfile").write_text('FROM python:3.11\nENV A="unterminated\n')
    with pytest.raises(DockerfileError, match="cannot be parsed"):
        dockerfile.read(tmp_path)


def test_the_grading_settings_override_the_image_s_env() -> None:
    """The image's ENV is the base; the grader's settings win; values naming a variable stay this machine's."""
    image = _parse("FROM python:3.11\nENV WORKERS=2 SECRET_KEY=baked-in PATH=/opt/venv/bin:$PATH CACHE=$UNKNOWN\n")
    assert dockerfile.container_env(image, {"SECRET_KEY": "graders"}) == {"WORKERS": "2", "SECRET_KEY": "graders"}
