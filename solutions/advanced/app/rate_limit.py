"""A sliding-window rate limiter in Redis: one atomic Lua script per request, shared by every worker."""

import math
import uuid
from dataclasses import dataclass

import redis.asyncio as redis

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

    def __init__(self, client: redis.Redis, *, limit: int, window: int, namespace: str = "agent:ratelimit") -> None:
        self.limit, self.window = limit, window
        self.namespace = namespace
        self._script = client.register_script(SLIDING_WINDOW)

    async def hit(self, client_key: str) -> Decision:
        """Count a request for client_key and decide; raises RedisError when Redis is unreachable."""
        # BEGIN SOLUTION TODO 16: count the request in the sliding window with one atomic script call
        allowed, remaining, reset_ms = await self._script(
            keys=[f"{self.namespace}:{client_key}"], args=[self.window * 1000, self.limit, uuid.uuid4().hex]
        )
        return Decision(bool(allowed), self.limit, max(int(remaining), 0), max(math.ceil(int(reset_ms) / 1000), 1))
        # BEGIN STARTER
        # return Decision(True, self.limit, self.limit, self.window)
        # END STARTER
        # END SOLUTION
