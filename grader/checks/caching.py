"""Response caching (advanced lab): MISS then HIT, a hit skips the agent, and the key covers the context."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from .. import hints
from ..context import Context
from ..core import ADVANCED, check
from ..expect import json_object, nonce, that
from .metrics import scrape
from .sessions import ask

QUERY = "/api/v1/query"


def _arithmetic() -> str:
    """A question no earlier request asked (the nonce sees to that), so its first answer is a miss."""
    return f"What is {100 + secrets.randbelow(900)} * {100 + secrets.randbelow(900)}? [{nonce()}]"


async def _asked(ctx: Context, query: str, **extra: Any) -> tuple[httpx.Response, dict[str, Any]]:
    response = await ctx.api.post(QUERY, json={"query": query, **extra})
    return response, json_object(response)


def _cache_state(response: httpx.Response, body: dict[str, Any]) -> tuple[str, object]:
    return response.headers.get("x-cache", ""), (body.get("metadata") or {}).get("cached")


@check(3, labs=ADVANCED, depends_on=("api.query_shape",), hint=hints.CACHE)
async def miss_then_hit(ctx: Context) -> None:
    """The same query twice: X-Cache MISS then HIT, metadata.cached false then true, the same answer."""
    query = _arithmetic()
    first, second = await _asked(ctx, query), await _asked(ctx, query)
    states = (_cache_state(*first), _cache_state(*second))
    that(states == (("MISS", False), ("HIT", True)), "(MISS, cached false) then (HIT, cached true)", f"{states}")
    that(first[1]["response"] == second[1]["response"], "the same answer twice", f"{second[1]['response']!r}")
    ctx.remember("cached-query", query)


@check(2, labs=ADVANCED, depends_on=("miss_then_hit", "metrics.names_types"), hint=hints.CACHE_HIT, alone=True)
async def hit_skips_agent(ctx: Context) -> None:
    """A cache hit does not run the agent: agent_executions_total stays put (and a miss moves it by 1)."""
    before = (await scrape(ctx)).total("agent_executions_total")
    hit = _cache_state(*await _asked(ctx, ctx.recall("cached-query")))
    after_hit = (await scrape(ctx)).total("agent_executions_total")
    miss = _cache_state(*await _asked(ctx, _arithmetic()))
    after_miss = (await scrape(ctx)).total("agent_executions_total")
    moves = (after_hit - before, after_miss - after_hit)
    observed = f"+{moves[0]:g} after the hit (X-Cache {hit[0]!r}), +{moves[1]:g} after a miss (X-Cache {miss[0]!r})"
    that(moves == (0, 1), "+0 after a hit, +1 after a miss", observed)


@check(3, labs=ADVANCED, depends_on=("miss_then_hit", "sessions.continuity"), hint=hints.CACHE_KEY)
async def context_safe(ctx: Context) -> None:
    """A cached answer never ignores the conversation: "What is my name?" in two sessions gets two names."""
    for _ in range(2):
        name = nonce().capitalize()
        session_id = (await ask(ctx, f"My name is {name}."))["session_id"]
        answer = (await ask(ctx, "What is my name?", session_id))["response"]
        that(name in answer, f"an answer naming {name}", repr(answer), cause="the cache key leaves out the session")


@check(1, labs=ADVANCED, depends_on=("miss_then_hit",), hint=hints.CACHE_KEY)
async def key_covers_max_iterations(ctx: Context) -> None:
    """A different max_iterations is another cache entry: with 1 step, the cached full answer is not reused."""
    response, body = await _asked(ctx, ctx.recall("cached-query"), max_iterations=1)
    state = _cache_state(response, body)
    that(state[0] != "HIT" and state[1] is not True, "not a hit", f"X-Cache {state[0]!r}, cached {state[1]!r}")


@check(1, labs=ADVANCED, depends_on=("miss_then_hit", "metrics.names_types"), hint=hints.CACHE, alone=True)
async def cache_metrics(ctx: Context) -> None:
    """cache_misses_total and cache_hits_total each move by 1 for a miss and then a hit."""
    query, before = _arithmetic(), await scrape(ctx)
    await _asked(ctx, query)
    await _asked(ctx, query)
    after = await scrape(ctx)
    moves = tuple(after.total(name) - before.total(name) for name in ("cache_misses_total", "cache_hits_total"))
    that(moves == (1, 1), "misses +1 and hits +1", f"misses +{moves[0]:g}, hits +{moves[1]:g}")
