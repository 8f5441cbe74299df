"""Settings (advanced lab): a production start refuses the default secret key."""

from __future__ import annotations

import re

from .. import hints
from ..context import Context
from ..core import ADVANCED, Failure, check
from ..expect import shorten, that
from ..runner import StageStartError, run_stage

NAMES_THE_SECRET = re.compile(r"secret[_ ]key", re.IGNORECASE)


@check(2, labs=ADVANCED, public=True, timeout=90, hint=hints.CONFIG)
async def production_secret(ctx: Context) -> None:
    """With ENVIRONMENT=production and no SECRET_KEY of its own, the stage refuses to start and says why."""
    settings = {name: value for name, value in ctx.setup.env.items() if name != "SECRET_KEY"}
    database = settings["DATABASE_URL"].replace("grader.db", "production.db")  # away from the running stage's
    try:
        production = settings | {"ENVIRONMENT": "production", "DATABASE_URL": database}
        async with run_stage(ctx.stage, production, start_timeout=60, server=ctx.server):
            pass
    except StageStartError as error:
        that(
            NAMES_THE_SECRET.search(error.log_tail),
            "a refusal that names SECRET_KEY as the reason",
            f"{error.message}; its log ends: {shorten(error.log_tail[-400:], 200)}",
        )
        return
    raise Failure(
        "the stage to refuse to start (the default SECRET_KEY lets anyone sign tokens)",
        "it started and answered GET /health",
    )
