"""When a cached block's retention runs out.

    in_memory   dropped once idle (no holder) for `in_memory_ttl` (10 min), and in any case
                `in_memory_max` (1 h) after it was first cached, even if in use
    24h         dropped once idle for `extended_ttl` (24 h)
    5m 30m 1h 12h   (explicit breakpoints) dropped once idle for that long; fixed by the
                APIs that name them, so not settings

A block keeps the longest retention of the requests that wrote or reused it. Expired
blocks are dropped in two ways: lazily, when a lookup finds one (it is never matched), and
by a sweep over the index at most every `SWEEP_INTERVAL_S`, so they leave the index (and
the stats) whatever the pool's pressure. Dropping takes the hash out of the index; a block
still in use stays with its holder and is plainly free once released.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.cache.settings import Retention

SWEEP_INTERVAL_S = 10.0  # how often (at most) the pool sweeps its index for expired blocks

FIXED_TTL_S = {
    Retention.FIVE_MINUTES: 300.0,
    Retention.THIRTY_MINUTES: 1800.0,
    Retention.ONE_HOUR: 3600.0,
    Retention.TWELVE_HOURS: 43200.0,
}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    in_memory_ttl: float = 600.0
    in_memory_max: float = 3600.0
    extended_ttl: float = 86400.0

    def idle_ttl(self, retention: Retention) -> float:
        """Seconds a block of this retention may sit idle."""
        if retention is Retention.EXTENDED:
            return self.extended_ttl
        if retention is Retention.IN_MEMORY:
            return self.in_memory_ttl
        return FIXED_TTL_S[retention]

    def expired(
        self, retention: Retention, cached_at: float, last_use: float, idle: bool, now: float
    ) -> bool:
        """Whether a block with these facts is past its time at `now` (`idle`: no holder)."""
        if retention is Retention.IN_MEMORY and now - cached_at > self.in_memory_max:
            return True
        return idle and now - last_use > self.idle_ttl(retention)
