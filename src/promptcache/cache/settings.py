"""A request's cache settings, as every API sends them to the engine: tenant, retention,
`prompt_cache_key` and explicit breakpoints. Protocol-neutral: no API names appear here."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Retention(enum.Enum):
    """How long a cached prefix is kept: OpenAI's `prompt_cache_retention` (`in_memory`,
    `24h`), the `ttl` of its explicit breakpoints (`30m`, `12h`) and Anthropic's
    `cache_control.ttl` (`5m`, `1h`). Each is an idle time: a hit refreshes it.

    A block keeps the longest retention of the requests that wrote or reused it. From `1h`
    up, blocks evicted for room are kept in the host tier; `24h` blocks are also written
    through to disk (`promptcache.cache.expiry` has the times).
    """

    FIVE_MINUTES = "5m"
    IN_MEMORY = "in_memory"  # kept while idle for minutes, in the KV pool only
    THIRTY_MINUTES = "30m"
    ONE_HOUR = "1h"
    TWELVE_HOURS = "12h"
    EXTENDED = "24h"  # kept up to a day, offloaded to slower tiers when the pool is full

    @property
    def rank(self) -> int:
        """Longer retention ranks higher (used to keep the longest of several)."""
        return _RANK[self]

    def longest(self, other: Retention) -> Retention:
        return self if self.rank >= other.rank else other

    @property
    def offloaded(self) -> bool:
        """Whether a block evicted for room is kept in the host tier."""
        return self.rank >= _RANK[Retention.ONE_HOUR]

    @property
    def on_disk(self) -> bool:
        """Whether blocks are written through to the disk tier."""
        return self is Retention.EXTENDED


_RANK = {r: i for i, r in enumerate(Retention)}
SHORTEST = Retention.FIVE_MINUTES  # what a freshly allocated block starts with


class CacheMode(enum.Enum):
    """Where a request's cache entries come from (OpenAI's `prompt_cache_options.mode`)."""

    IMPLICIT = "implicit"  # automatic: every full prompt block, plus the explicit breakpoints
    EXPLICIT = "explicit"  # only the explicit breakpoints: nothing without them


@dataclass(frozen=True, slots=True)
class Breakpoint:
    """An explicit breakpoint: the prompt's first `position` tokens form a reusable prefix,
    cached to the token (not rounded to a block) and kept for `retention`."""

    position: int
    retention: Retention


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Cache settings of one request.

    Attributes:
        tenant: salts the chain hash, so tenants never share (or time) each other's blocks.
            None is a tenant of its own.
        retention: the request's retention class (default `in_memory`).
        prompt_cache_key: the client's routing hint; combined with the prefix to pick a
            worker. It never splits the cache within a tenant.
        mode: implicit (every full block is cached, and the breakpoints too) or explicit
            (only the breakpoints' prefixes are cached and matched).
        breakpoints: explicit breakpoints to write, in prompt order (the API adapter keeps
            at most the number its API allows).
        reads: False computes the whole prompt, reusing nothing (it is still written):
            for requests that need every prompt position computed.
    """

    tenant: str | None = None
    retention: Retention = Retention.IN_MEMORY
    prompt_cache_key: str | None = None
    mode: CacheMode = CacheMode.IMPLICIT
    breakpoints: tuple[Breakpoint, ...] = ()
    reads: bool = True

    def block_retention(self, end: int) -> Retention:
        """The retention of a cached block ending at token `end`: the longest of the
        request's and of every breakpoint whose prefix holds the block."""
        out = self.retention
        for bp in self.breakpoints:
            if bp.position >= end:
                out = out.longest(bp.retention)
        return out

    def kept_long(self, start: int, end: int) -> int:
        """Of the prompt tokens in [start, end), how many are cached for an hour or more
        (by the request's retention, or inside a breakpoint's prefix of `1h` or longer):
        the tokens whose writes Anthropic bills at the 1-hour rate."""
        if self.retention.offloaded:
            return max(0, end - start)
        reach = max((b.position for b in self.breakpoints if b.retention.offloaded), default=0)
        return max(0, min(end, reach) - start)

    def writes_block(self, end: int) -> bool:
        """Whether a full block ending at token `end` is cached by this request."""
        if self.mode is CacheMode.IMPLICIT:
            return True
        return any(bp.position >= end for bp in self.breakpoints)
