"""A request's cache settings, as every API sends them to the engine: tenant, retention,
`prompt_cache_key` and explicit breakpoints. Protocol-neutral: no API names appear here."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Retention(enum.Enum):
    """How long a request asks its cached prefix to be kept (OpenAI's `prompt_cache_retention`).

    A block keeps the longest retention of the requests that wrote or reused it.
    """

    IN_MEMORY = "in_memory"  # kept while idle for minutes, in the KV pool only
    EXTENDED = "24h"  # kept up to a day, offloaded to slower tiers when the pool is full

    @property
    def rank(self) -> int:
        """Longer retention ranks higher (used to keep the longest of several)."""
        return _RANK[self]

    def longest(self, other: Retention) -> Retention:
        return self if self.rank >= other.rank else other


_RANK = {Retention.IN_MEMORY: 0, Retention.EXTENDED: 1}


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """Cache settings of one request.

    Attributes:
        tenant: salts the chain hash, so tenants never share (or time) each other's blocks.
            None is a tenant of its own.
        retention: the request's retention class (default `in_memory`).
        prompt_cache_key: the client's routing hint; combined with the prefix to pick a
            worker. It never splits the cache within a tenant.
        breakpoints: explicit breakpoints, token positions where a reusable prefix ends
            (recorded for the explicit-caching API; implicit caching ignores them).
    """

    tenant: str | None = None
    retention: Retention = Retention.IN_MEMORY
    prompt_cache_key: str | None = None
    breakpoints: tuple[int, ...] = ()
