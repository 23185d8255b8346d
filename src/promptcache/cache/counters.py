"""The prefix cache's counters: monotonic totals since start, read by the engine's stats."""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcache.cache.index import Tier


@dataclass(slots=True)
class CacheCounters:
    """Monotonic counters since start (prompt tokens of cacheable and other requests)."""

    queried_tokens: int = 0  # prompt tokens of requests admitted for the first time
    hit_tokens: int = 0  # of those, tokens reused from the cache
    write_tokens: int = 0  # prompt tokens newly added to the cache
    # of the hit tokens, those loaded from each lower tier
    tier_hit_tokens: dict[Tier, int] = field(default_factory=lambda: dict.fromkeys(Tier, 0))
    breakpoint_hits: int = 0  # requests whose hit ended at an explicit breakpoint
    breakpoint_writes: int = 0  # partial blocks cached for explicit breakpoints
    breakpoints_skipped: int = 0  # breakpoints not cached: too short, or no free block
