"""Explicit breakpoints as prefix-cache entries: matching a tenant's latest breakpoints at
admission, and caching each breakpoint's prefix once it is computed.

A breakpoint that ends inside a block is named by the partial hash of its tokens
(`cache.breakpoints.partial_hash`) and cached as a block of its own, copied out of the
request's block (copy on write); one that ends at a block boundary is named by that
block's chain hash. Each tenant's latest breakpoints are kept in a `BreakpointBook`.
Works on hashes and block ids only, like the prefix cache it serves.
"""

from __future__ import annotations

from collections.abc import Sequence

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.block_pool import BlockPool
from promptcache.cache.breakpoints import BreakpointBook, BreakpointHit, partial_hash
from promptcache.cache.counters import CacheCounters
from promptcache.cache.handle import CacheHandle, TokenSource
from promptcache.cache.index import Loader, Location, Tier
from promptcache.cache.lower import LowerTiers
from promptcache.cache.settings import Breakpoint
from promptcache.cache.tiers import PoolBlock


class BreakpointEntries:
    """The tenants' breakpoints over the prefix cache's pool and tiers."""

    def __init__(
        self,
        pool: BlockPool,
        lower: LowerTiers,
        block_size: int,
        min_tokens: int,
        loader: Loader | None,
        counters: CacheCounters,
    ) -> None:
        """`min_tokens`: the shortest prefix a breakpoint caches; `loader` copies a pool
        block into another (it makes the partial blocks); `counters`: the prefix cache's."""
        self.pool, self.lower, self.loader = pool, lower, loader
        self.block_size = block_size
        self.min_tokens = min_tokens
        self.book = BreakpointBook()
        self.counters = counters

    def where(self, h: BlockHash, peek: bool = False) -> Location | None:
        """Where block `h` is cached: the pool, else the fastest tier holding it. With
        `peek`, an expired pool block is passed over without being dropped."""
        if peek:
            if self.pool.peek([h]):
                return self.pool.where(h)
        elif ids := self.pool.match([h]):
            return Location(Tier.DEVICE, ids[0])
        run = self.lower.run([h])
        return run[0] if run else None

    def hit(
        self, handle: CacheHandle, seq: TokenSource, found: int, peek: bool = False
    ) -> BreakpointHit | None:
        """The longest of the tenant's latest breakpoints that `seq` starts with, whose
        full blocks are among the `found` cached ones and whose partial block is cached;
        never past the request's reuse limit (a request that samples always computes its
        last known token). `peek`: change nothing."""
        assert handle.seed is not None
        bs, best = self.block_size, None
        for prefix, position in self.book.latest(handle.seed):
            if position > seq.reuse_limit or (best is not None and position <= best.position):
                continue
            k, r = divmod(position, bs)
            if k > found:
                continue
            if r == 0:
                if k and handle.block_hashes[k - 1] == prefix:
                    best = BreakpointHit(position)
                continue
            parent = handle.block_hashes[k - 1] if k else handle.seed
            if partial_hash(parent, seq.tokens_slice(k * bs, position)) != prefix:
                continue
            where = self.where(prefix, peek)
            if where is not None:
                best = BreakpointHit(position, prefix, where)
        return best

    def write(
        self, handle: CacheHandle, seq: TokenSource, block_table: Sequence[int], computed: int
    ) -> None:
        """Cache each breakpoint whose prefix is now computed, and note it as the tenant's
        latest."""
        assert handle.seed is not None
        for bp in handle.settings.breakpoints[handle.breakpoints_done :]:
            if bp.position > computed:
                return
            handle.breakpoints_done += 1
            if not self.min_tokens <= bp.position <= seq.num_prompt_tokens:
                self.counters.breakpoints_skipped += 1
                continue
            prefix = self._entry(handle, seq, block_table, bp)
            if prefix is None:
                self.counters.breakpoints_skipped += 1
                continue
            self.book.add(handle.seed, prefix, bp.position)
            handle.breakpoint_end = max(handle.breakpoint_end, bp.position)

    def _entry(
        self, handle: CacheHandle, seq: TokenSource, block_table: Sequence[int], bp: Breakpoint
    ) -> BlockHash | None:
        """The hash naming breakpoint `bp`'s prefix, its partial block cached (copied out
        of the request's block) or refreshed; None if no pool block is free for it."""
        assert handle.seed is not None
        k, r = divmod(bp.position, self.block_size)
        parent = handle.block_hashes[k - 1] if k else handle.seed
        if r == 0:
            return parent
        tokens = seq.tokens_slice(k * self.block_size, bp.position)
        h = partial_hash(parent, tokens)
        where = self.where(h)
        if where is not None:
            if where.tier is Tier.DEVICE:  # a hit refreshes it, as does writing it again
                self.pool.acquire([where.slot], bp.retention)
                self.pool.free([where.slot])
            return h
        if self.loader is None or not self.pool.can_allocate(1):
            return None
        (block_id,) = self.pool.allocate(1)
        self.loader(Location(Tier.DEVICE, block_table[k]), h, block_id)
        self.pool.register(block_id, h, bp.retention)
        self.pool.free([block_id])
        handle.partial_write_tokens += r
        self.counters.breakpoint_writes += 1
        if self.lower.writes_through(bp.retention):
            self.lower.store(PoolBlock(h, parent, tokens, block_id, bp.retention))
        return h
