"""Authentication: bcrypt password hashes (passlib API), JWT access tokens, and the current-user dependencies."""

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from jose import JWTError, jwt
from passlib.context import CryptContext
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from .config import Settings
from .database import UserRow
from .exceptions import ForbiddenError, UnauthorizedError

MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; longer passwords are refused rather than truncated
MAX_CACHED_USERS = 10_000
DEMO_USERS = (
    ("demo", "Demo User", "demo-password", False),
    ("alice", "Alice Example", "alice-password", False),
    ("inactive", "Inactive User", "inactive-password", True),
)


@dataclass(frozen=True)
class User:
    """Who is calling."""

    username: str
    full_name: str
    disabled: bool


class TokenVerifier:
    """Issues and verifies JWT access tokens with the settings' key and algorithm."""

    def __init__(self, settings: Settings, cache_size: int = 10_000) -> None:
        self._key = settings.secret_key.get_secret_value()
        self._algorithm = settings.algorithm
        self._lifetime = settings.access_token_expire_minutes * 60
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size

    def create_access_token(self, username: str) -> tuple[str, int]:
        """A signed token for the user and its lifetime in seconds."""
        # BEGIN SOLUTION TODO 10: sign an access token for the user with SECRET_KEY and ALGORITHM
        now = datetime.now(UTC)
        claims = {
            "sub": username,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(seconds=self._lifetime),
            "type": "access",
        }
        return jwt.encode(claims, self._key, algorithm=self._algorithm), self._lifetime
        # END SOLUTION

    def verify(self, token: str) -> str:
        """The username a valid token was issued to; UnauthorizedError for anything else.

        A verified token is remembered until it expires (bounded), so a client sending the same token on
        every request costs one signature check, not one per request.
        """
        # BEGIN SOLUTION TODO 11: verify the token: signature, algorithm, expiry and subject (401 otherwise)
        cached = self._cache.get(token)
        if cached is not None and cached[1] > time.time():
            self._cache.move_to_end(token)
            return cached[0]
        try:
            # An explicit algorithm list: a token cannot pick its own (`none`, or RS256 with our key as public key).
            claims = jwt.decode(
                token, self._key, algorithms=[self._algorithm], options={"require_exp": True, "require_sub": True}
            )
        except JWTError as exc:
            raise UnauthorizedError("Could not validate the token") from exc
        username = claims.get("sub")
        if not isinstance(username, str) or not username or claims.get("type") != "access":
            raise UnauthorizedError("Could not validate the token")
        self._cache[token] = (username, float(claims["exp"]))
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return username
        # BEGIN STARTER
        # raise UnauthorizedError("TODO 11: verify the token")
        # END STARTER
        # END SOLUTION


class AuthService:
    """Verifies passwords and issues tokens; users live in the database."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        verifier: TokenVerifier,
        bcrypt_rounds: int = 12,
        user_cache_seconds: float = 0.0,
    ) -> None:
        self.sessions = sessions
        self.tokens = verifier
        self._user_ttl = user_cache_seconds
        self._users: dict[str, tuple[User | None, float]] = {}
        self.passwords = CryptContext(schemes=["bcrypt"], bcrypt__rounds=bcrypt_rounds)

    @cached_property
    def _dummy_hash(self) -> str:
        """Checked against when the user is unknown, so both failures take a bcrypt verification's time.

        Made on first use: at start-up it cost every worker a bcrypt hash before its first request.
        """
        hashed: str = self.passwords.hash("a password nobody has")
        return hashed

    async def hash_password(self, password: str) -> str:
        """A bcrypt hash, computed off the event loop (it takes a deliberate fraction of a second)."""
        return await anyio.to_thread.run_sync(self.passwords.hash, password)

    async def seed_demo_users(self) -> None:
        """Create the contract's demo users where they are missing."""
        async with self.sessions.begin() as db:
            existing = set((await db.scalars(select(UserRow.username))).all())
            for username, full_name, password, disabled in DEMO_USERS:
                if username not in existing:
                    hashed = await self.hash_password(password)
                    db.add(UserRow(username=username, full_name=full_name, hashed_password=hashed, disabled=disabled))

    async def get_user(self, username: str) -> User | None:
        """The user with that name, or None; a row read less than `user_cache_seconds` ago is reused.

        Every authenticated request needs its user, and reading the row each time was the largest database
        cost of a cached answer. The price is that a deleted or disabled user is refused up to that long later.
        """
        now = time.monotonic()
        cached = self._users.get(username)
        if cached is not None and cached[1] > now:
            return cached[0]
        async with self.sessions() as db:
            row = await db.get(UserRow, username)
        user = None if row is None else User(row.username, row.full_name, row.disabled)
        if self._user_ttl > 0:
            if len(self._users) >= MAX_CACHED_USERS:
                self._users.clear()
            self._users[username] = (user, now + self._user_ttl)
        return user

    async def authenticate_user(self, username: str, password: str) -> User | None:
        """The user if the password is theirs; None otherwise, in about the same time either way."""
        # BEGIN SOLUTION TODO 9: check the password against the bcrypt hash (a dummy hash for unknown users)
        async with self.sessions() as db:
            row = await db.get(UserRow, username)
        hashed = row.hashed_password if row is not None else self._dummy_hash
        valid = await anyio.to_thread.run_sync(self.passwords.verify, password, hashed)
        if row is None or not valid:
            return None
        return User(row.username, row.full_name, row.disabled)
        # BEGIN STARTER
        # return None
        # END STARTER
        # END SOLUTION


async def get_auth_service(request: Request) -> AuthService:
    """The application's auth service (created by lifespan)."""
    service: AuthService = request.app.state.auth_service
    return service


AuthDep = Annotated[AuthService, Depends(get_auth_service)]


async def get_current_user(request: Request, token: str | None) -> User:
    """The user the bearer token belongs to; 401 without a valid token or for an unknown user."""
    if not token:
        raise UnauthorizedError("Not authenticated")
    auth = await get_auth_service(request)
    user = await auth.get_user(auth.tokens.verify(token))
    if user is None:
        raise UnauthorizedError("Could not validate the token")
    request.state.user = user.username
    return user


async def get_current_active_user(user: User) -> User:
    """The current user, if their account is active; 403 otherwise."""
    # BEGIN SOLUTION TODO 12: refuse inactive users with 403
    if user.disabled:
        raise ForbiddenError("This account is disabled")
    # BEGIN STARTER
    # END STARTER
    # END SOLUTION
    return user


class OAuth2BearerUser(OAuth2PasswordBearer):
    """OAuth2's password flow (what the docs' Authorize button uses), as a dependency that gives the bearer
    token's active user.

    One dependency rather than a user dependency under a token dependency: FastAPI's bookkeeping costs a
    request some 8-10 microseconds for each dependency it resolves, and every authenticated route pays it.
    """

    async def __call__(self, request: Request) -> User:  # type: ignore[override]
        return await get_current_active_user(await get_current_user(request, await super().__call__(request)))


# Named as FastAPI names a plain OAuth2PasswordBearer in the OpenAPI document.
oauth2_scheme = OAuth2BearerUser(tokenUrl="/api/v1/auth/login", auto_error=False, scheme_name="OAuth2PasswordBearer")
CurrentUser = Annotated[User, Depends(oauth2_scheme)]
