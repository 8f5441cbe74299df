"""What a check receives: HTTP clients for the running stage, its log, the lab, and the demo users' tokens."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from .core import OBSERVED, Lab
from .profiles import Profile, Setup
from .runner import ForkServer, StageLog

T = TypeVar("T")
REQUEST_TIMEOUT = httpx.Timeout(20.0, connect=5.0)
LOGIN_PATH = "/api/v1/auth/login"
DEMO_USERS = {"demo": "demo-password", "alice": "alice-password", "inactive": "inactive-password"}


@dataclass
class Context:
    """One running stage as the checks see it; `api` sends the demo user's token once the lab has logins.

    `memo` keeps observations of this server; `notes` is shared by every start of one grade.
    """

    stage: Path
    url: str
    lab: Lab
    profile: Profile
    setup: Setup
    log: StageLog
    notes: dict[str, Any] = field(default_factory=dict)
    anon: httpx.AsyncClient = field(init=False)
    api: httpx.AsyncClient = field(init=False)
    tokens: dict[str, str] = field(default_factory=dict)
    server: ForkServer | None = None  # the grade's fork server, for a check that makes a start of its own
    _memo: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    @property
    def secret_key(self) -> str:
        return self.setup.env["SECRET_KEY"]

    def __post_init__(self) -> None:
        # No keep-alive: a stage that drops a connection after a crash must not fail the next request too.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        self.anon = httpx.AsyncClient(base_url=self.url, timeout=REQUEST_TIMEOUT, limits=limits)
        self.api = httpx.AsyncClient(base_url=self.url, timeout=REQUEST_TIMEOUT, limits=limits)

    async def aclose(self) -> None:
        unfinished = [task for task in self._memo.values() if not task.done()]  # their checks timed out
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        await self.anon.aclose()
        await self.api.aclose()

    async def log_in_demo_users(self) -> None:
        """Advanced lab: fetch demo's and alice's tokens, quietly; the auth checks report what goes wrong."""
        if self.lab != "advanced":
            return
        for user in ("demo", "alice"):
            try:
                await self.token(user)
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                continue

    async def token(self, user: str) -> str:
        """The user's access token, logging in on first use (raises on a failed login)."""
        if user not in self.tokens:
            response = await self.anon.post(LOGIN_PATH, data={"username": user, "password": DEMO_USERS[user]})
            response.raise_for_status()
            token = response.json()["access_token"]
            if not isinstance(token, str):
                raise TypeError("access_token is not a string")
            self.use_token(user, token)
        return self.tokens[user]

    def use_token(self, user: str, token: str) -> None:
        self.tokens[user] = token
        if user == "demo":
            self.api.headers["Authorization"] = f"Bearer {token}"

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def memo(self, key: str, compute: Callable[[], Awaitable[T]]) -> T:
        """Compute once per server start what several checks observe (one stream, one load run).

        Checks that ask at the same time (`alongside` ones) share the one computation; one of them timing out
        does not cancel it for the others.
        """
        if (observed := OBSERVED.get()) is not None:
            observed.add(key)
        if key not in self._memo:
            self._memo[key] = asyncio.ensure_future(compute())
        return cast("T", await asyncio.shield(self._memo[key]))

    def forget(self, keys: set[str]) -> None:
        """Drop these finished observations, so that the next check to ask makes them again (a retry)."""
        for key in keys:
            if key in self._memo and self._memo[key].done():
                del self._memo[key]

    def remember(self, key: str, value: object) -> None:
        self.notes[key] = value

    def recall(self, key: str) -> Any:
        """What an earlier check of this grade remembered, on any start (KeyError if it did not run)."""
        return self.notes[key]
