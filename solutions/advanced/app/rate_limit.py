"""A sliding-window rate limiter in Redis: one atomic Lua script per request, shared by every worker.

Also the login throttle: failed logins counted per username, whichever address they come from.
"""

import hashlib
import math
import secrets
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import RedisError

from .exceptions import TooManyAttemptsError
from .logging_config import get_logger
from .redis_batch import RedisBatch

logger = get_logger(__name__)

# KEYS[1]: the client's window (a sorted set of request times). ARGV: window (ms), limit, a unique member.
# Redis's own clock keeps every instance on one time line; the script runs atomically, so concurrent
# requests can never be over-admitted.
SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  count = count + 1
  allowed = 1
end
redis.call('PEXPIRE', KEYS[1], window)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {allowed, limit - count, reset}
"""


@dataclass(frozen=True)
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers (and Retry-After when refused)."""
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class RateLimiter:
    """At most `limit` requests per `window` seconds per client key."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        limit: int,
        window: int,
        namespace: str = "agent:ratelimit",
        batch: RedisBatch | None = None,
    ) -> None:
        self.limit, self.window = limit, window
        self.namespace = namespace
        # Through the batch, the script calls of concurrent requests share their round trips (redis_batch).
        self._script = (batch or client).register_script(SLIDING_WINDOW)

    async def hit(self, client_key: str) -> Decision:
        """Count a request for client_key and decide; raises RedisError when Redis is unreachable."""
        # BEGIN SOLUTION TODO 16: count the request in the sliding window with one atomic script call
        allowed, remaining, reset_ms = await self._script(
            keys=[f"{self.namespace}:{client_key}"], args=[self.window * 1000, self.limit, secrets.token_hex(16)]
        )
        return Decision(bool(allowed), self.limit, max(int(remaining), 0), max(math.ceil(int(reset_ms) / 1000), 1))
        # BEGIN STARTER
        # return Decision(True, self.limit, self.limit, self.window)
        # END STARTER
        # END SOLUTION


# KEYS[1]: one username's failed logins (a sorted set of times). ARGV: window (ms), and a unique member to add
# (a failure) or '' (only count). Returns the failures in the window and the ms until the oldest leaves it.
LOGIN_FAILURES = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], window)
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = 0
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {redis.call('ZCARD', KEYS[1]), reset}
"""


class LoginThrottle:
    """At most `limit` failed logins per username in `window` seconds, from any address; a success clears them.

    The middleware's limit stops one address trying many usernames; this stops many addresses trying one. Any
    username counts, known or not, so the throttle tells nothing about who exists. Redis down: not throttled
    (logged), like the rate limit.
    """

    def __init__(
        self, client: redis.Redis, *, limit: int, window: int, namespace: str = "agent:login-failures"
    ) -> None:
        self.client = client
        self.limit, self.window = limit, window
        self.namespace = namespace
        self._script = client.register_script(LOGIN_FAILURES)

    async def check(self, username: str) -> None:
        """TooManyAttemptsError while the username has `limit` failures in the window; checked before the password."""
        failures, reset_ms = await self._count(username, member="")
        if failures >= self.limit:
            retry_after = max(math.ceil(reset_ms / 1000), 1)
            raise TooManyAttemptsError(f"Too many failed logins; retry in {retry_after} s", retry_after)

    async def failed(self, username: str) -> None:
        """Count a failed login for the username."""
        await self._count(username, member=secrets.token_hex(16))

    async def succeeded(self, username: str) -> None:
        """Forget the username's failures."""
        try:
            await self.client.delete(self._key(username))
        except RedisError as exc:
            logger.warning("login throttle skipped: Redis unavailable", error=type(exc).__name__)

    def _key(self, username: str) -> str:
        # Hashed: a username is whatever the client sent, of any length.
        digest = hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.namespace}:{digest}"

    async def _count(self, username: str, member: str) -> tuple[int, int]:
        try:
            failures, reset_ms = await self._script(keys=[self._key(username)], args=[self.window * 1000, member])
        except RedisError as exc:
            logger.warning("login throttle skipped: Redis unavailable", error=type(exc).__name__)
            return 0, 0
        return int(failures), int(reset_ms)
