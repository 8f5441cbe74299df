"""The container image (advanced lab): the Dockerfile's final stage read, and its CMD run as the image would.

The `image` profile starts the stage from its folder with the Dockerfile's command (its `python` is the
grader's) and the image's ENV under the grading settings, except WORKERS, which stays the image's; the grader
gives it HOST, PORT, a database of its own, and the PROMETHEUS_MULTIPROC_DIR where each worker writes its
metrics files, named after its pid.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from .. import hints
from ..context import Context
from ..core import ADVANCED, Failure, check
from ..dockerfile import DockerfileError, local_command, read
from ..expect import json_object, status, that
from ..prometheus import parse

ALL_INTERFACES = ("0.0.0.0", "::")  # noqa: S104 - what a container must listen on to be reachable at all
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", "8000"  # the contract's defaults when the image sets none
WORKER_FILE = re.compile(r"_(\d+)\.db$")  # prometheus_client's multiprocess files end in _<pid>.db
WORKERS_WAIT_SECONDS = 30.0  # for the last worker to start, once the first answers
ROOT_REQUESTS = 20


@check(1, labs=ADVANCED, public=True, hint=hints.IMAGE_COMMAND)
async def command(ctx: Context) -> None:
    """The stage's Dockerfile ends in a stage whose CMD, in exec form, starts Python (python -m app.serve)."""
    try:
        local_command(read(ctx.stage))
    except DockerfileError as error:
        expected = 'a Dockerfile whose final stage has CMD ["python", "-m", "app.serve"] or the like'
        raise Failure(expected, str(error)) from None


@check(2, labs=ADVANCED, public=True, depends_on=("command",), hint=hints.IMAGE_SHAPE)
async def production_shape(ctx: Context) -> None:
    """The image runs as a non-root USER, listens on 0.0.0.0 at the PORT it EXPOSEs, and has a HEALTHCHECK."""
    image = read(ctx.stage)
    problems = []
    if image.runs_as_root:
        problems.append(f"USER {image.user or 'is never set'}: the service would run as root")
    host, port = image.env.get("HOST", DEFAULT_HOST), image.env.get("PORT", DEFAULT_PORT)
    if host not in ALL_INTERFACES:
        problems.append(f"HOST={host}: nothing outside the container could reach it")
    if port not in image.exposed:
        problems.append(f"EXPOSE {' '.join(image.exposed) or 'is missing'}, while the service listens on {port}")
    if not image.healthcheck:
        problems.append("no HEALTHCHECK: nothing would notice a service that stopped answering")
    that(not problems, "a non-root USER, ENV HOST=0.0.0.0, EXPOSE of its PORT, and a HEALTHCHECK", "; ".join(problems))


@check(2, labs=ADVANCED, public=True, profile="image", depends_on=("command",), hint=hints.IMAGE_SERVES)
async def serves(ctx: Context) -> None:
    """The Dockerfile's CMD, run from the stage folder with the image's ENV, serves GET /health (healthy)."""
    body = json_object(await ctx.anon.get("/health"))
    that(body.get("status") == "healthy", '"status": "healthy"', f'"status": {body.get("status")!r}')


def _worker_pids(folder: Path) -> set[str]:
    return {match[1] for path in folder.glob("*.db") if (match := WORKER_FILE.search(path.name))}


async def _wait_for_workers(folder: Path) -> set[str]:
    """The pids that wrote metrics files, once there are at least two (or when the wait is over)."""
    for _ in range(int(WORKERS_WAIT_SECONDS / 0.2)):
        if len(pids := _worker_pids(folder)) >= 2:
            return pids
        await asyncio.sleep(0.2)
    return _worker_pids(folder)


async def _served_root(ctx: Context) -> float:
    response = await ctx.anon.get("/api/v1/metrics")
    status(response, 200)
    return parse(response.text).total("http_requests_total", method="GET", endpoint="/", status="200")


@check(2, labs=ADVANCED, public=True, profile="image", depends_on=("serves",), timeout=60, hint=hints.IMAGE_WORKERS)
async def workers(ctx: Context) -> None:
    """The CMD starts several worker processes, and /api/v1/metrics counts the requests that all of them served."""
    pids = await _wait_for_workers(Path(ctx.setup.env["PROMETHEUS_MULTIPROC_DIR"]))
    that(
        len(pids) >= 2,
        "metrics files from at least 2 worker processes in PROMETHEUS_MULTIPROC_DIR",
        f"files from {len(pids)} process(es), with WORKERS={ctx.setup.env.get('WORKERS', 'unset')} in the image's ENV",
        cause="a single uvicorn process: WORKERS of 1 (the default), or a CMD that ignores it",
    )
    before = await _served_root(ctx)
    # The client keeps no connection alive: each request is a new connection, which any worker may accept.
    await asyncio.gather(*(ctx.anon.get("/") for _ in range(ROOT_REQUESTS)))
    counted = await _served_root(ctx) - before
    that(
        counted == ROOT_REQUESTS,
        f'http_requests_total{{endpoint="/"}} up by {ROOT_REQUESTS}, whichever worker answered',
        f"up by {counted:g}",
        cause="each worker reports only its own counts: multiprocess mode is off (PROMETHEUS_MULTIPROC_DIR)",
    )
