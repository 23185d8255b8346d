"""The lower tiers as the prefix cache sees them: one ordered list (fastest first) behind
`LowerTier`, where the fastest tier holding a block answers for it, fetches are asked of
every tier, and every tier is offered every block it may keep."""

from __future__ import annotations

from collections.abc import Sequence

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.handle import CacheHandle
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import Retention
from promptcache.cache.tiers import LowerTier, PoolBlock


class LowerTiers:
    """The tiers below the pool, fastest first, driven as one."""

    def __init__(self, tiers: Sequence[LowerTier]) -> None:
        self.tiers = list(tiers)
        self._of = {t.tier: t for t in self.tiers}

    def run(self, hashes: list[BlockHash]) -> list[Location]:
        """Where each block of the longest run of `hashes` held in a lower tier lives (the
        fastest tier holding it)."""
        found: list[Location] = []
        for h in hashes:
            where = next((loc for t in self.tiers if (loc := t.lookup(h)) is not None), None)
            if where is None:
                break
            found.append(where)
        return found

    def fetching(self, hashes: list[BlockHash]) -> bool:
        return any(t.fetching(hashes) for t in self.tiers)

    def ready(self, h: BlockHash, where: Location) -> bool:
        """Whether block `h` can be copied from `where` now (a pool block always can)."""
        return where.tier is Tier.DEVICE or self._of[where.tier].ready(h)

    def fetch(
        self, handle: CacheHandle, hashes: list[BlockHash], lower: list[Location]
    ) -> tuple[list[Location], bool]:
        """Have the blocks of `lower` that are not ready to load fetched in the background
        (disk reads); True while the request should wait for them. Once the fetches are
        done, the run stops at the first block that is still not ready (a bad file, or
        dropped meanwhile): that one is computed."""
        run = list(zip(hashes, lower, strict=False))
        if all(self.ready(h, loc) for h, loc in run):
            return lower, False
        wanted = [h for h, loc in run if loc.tier is not Tier.DEVICE]
        if self.fetching(wanted) or not handle.wanted:
            for tier in self.tiers:
                tier.fetch([h for h, loc in run if loc.tier is tier.tier])
            handle.wanted = wanted
            return lower, True
        for i, (h, loc) in enumerate(run):
            if not self.ready(h, loc):
                return lower[:i], False
        return lower, False

    def pin(self, hashes: list[BlockHash]) -> None:
        for tier in self.tiers:
            tier.pin(hashes)

    def unpin(self, hashes: list[BlockHash]) -> None:
        for tier in self.tiers:
            tier.unpin(hashes)

    def writes_through(self, retention: Retention) -> bool:
        """Whether any tier keeps blocks of `retention` when offered them."""
        return any(t.writes_through(retention) for t in self.tiers)

    def store(self, block: PoolBlock) -> None:
        for tier in self.tiers:
            tier.store(block)
