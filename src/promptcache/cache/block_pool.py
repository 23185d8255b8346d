"""The KV block pool's bookkeeping, with the prefix cache's hash index inside it.

Every block is in exactly one state:

    free    ref_count 0, no hash       in the free queue
    cached  ref_count 0, hash set      in the free queue AND in the index (reusable)
    in use  ref_count >= 1             held by one or more sequences (hash optional)

Allocation takes the least recently freed block; if it was cached, its hash leaves the
index (an eviction): the eviction listeners hear of it first, with the block's hash,
retention and last use, so a slower tier can copy it out before the slot is reused.
Blocks whose retention ran out are dropped too (`promptcache.cache.expiry`): lazily when a
lookup finds one, and by a periodic sweep; listeners hear of those as expired.
Blocks in use are never evicted. A cache hit takes blocks out of the free queue (or adds
a holder) without copying anything. Pure bookkeeping over ids; the tensors live in
`promptcache.engine.kv_cache`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.evictions import EvictedBlock, EvictionListener, EvictionRecord
from promptcache.cache.expiry import SWEEP_INTERVAL_S, RetentionPolicy
from promptcache.cache.free_queue import Block, FreeQueue
from promptcache.cache.index import HashIndex, Location, Tier
from promptcache.cache.settings import SHORTEST, Retention


class OutOfBlocksError(RuntimeError):
    """More blocks were requested than are free; callers check `can_allocate` first."""


@dataclass(slots=True)
class PoolCounters:
    """Monotonic counters since start."""

    blocks_evicted: int = 0
    blocks_expired: int = 0  # dropped because their retention ran out
    blocks_cached: int = 0  # registrations into the index


class BlockPool:
    """Hands out block ids, counts their holders and indexes full blocks by chain hash."""

    def __init__(
        self,
        num_blocks: int,
        eviction_history: int = 0,
        retention: RetentionPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if num_blocks <= 0:
            raise ValueError("the KV pool needs at least one block")
        self.retention = retention or RetentionPolicy()
        self.clock = clock
        self._last_sweep = clock()
        self.num_blocks = num_blocks
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_queue = FreeQueue(self.blocks)
        self.index = HashIndex()
        self.counters = PoolCounters()
        self.evicted = EvictionRecord(eviction_history)
        self._listeners: list[EvictionListener] = [self.evicted.add]

    # -- sizes ----------------------------------------------------------------------------

    @property
    def num_free(self) -> int:
        """Blocks that can be allocated now (plain free plus cached-but-free)."""
        return len(self.free_queue)

    @property
    def num_in_use(self) -> int:
        return self.num_blocks - len(self.free_queue)

    @property
    def num_cached(self) -> int:
        """Blocks in the index (in use or not)."""
        return len(self.index)

    def can_allocate(self, n: int) -> bool:
        return n <= len(self.free_queue)

    # -- allocation -----------------------------------------------------------------------

    def allocate(self, n: int) -> list[int]:
        """Take `n` blocks (one holder each), least recently freed first, evicting if cached."""
        if n > len(self.free_queue):
            raise OutOfBlocksError(f"asked for {n} blocks, {len(self.free_queue)} free")
        out = []
        for _ in range(n):
            block = self.free_queue.popleft()
            if block.block_hash is not None:
                self._drop(block, expired=False)
            block.ref_count = 1
            block.retention = SHORTEST
            out.append(block.block_id)
        return out

    def free(self, block_ids: Iterable[int]) -> None:
        """Drop one holder from each block; blocks with none join the free queue's tail.

        Pass a sequence's blocks last-first, so its prefix stays cached longest.
        """
        now = self.clock()
        for bid in block_ids:
            block = self.blocks[bid]
            if block.ref_count <= 0:
                raise ValueError(f"block {bid} freed while not in use")
            block.ref_count -= 1
            block.last_use = now
            if block.ref_count == 0:
                self.free_queue.append(block)

    def ref_count(self, block_id: int) -> int:
        return self.blocks[block_id].ref_count

    # -- prefix cache ---------------------------------------------------------------------

    def match(self, hashes: Sequence[BlockHash]) -> list[int]:
        """Block ids of the longest run of `hashes` (from the first) found in the pool;
        an expired block found on the way is dropped and ends the run."""
        out = []
        now = self.clock()
        for h in hashes:
            loc = self.index.where(h)
            if loc is None or loc.tier is not Tier.DEVICE:
                break
            block = self.blocks[loc.slot]
            if self._expired(block, now):
                self._drop(block, expired=True)
                break
            out.append(loc.slot)
        return out

    def peek(self, hashes: Sequence[BlockHash]) -> int:
        """How many of `hashes` (from the first) `match` would find now, changing nothing:
        an expired block ends the run but stays where it is (no drop, no refresh)."""
        now = self.clock()
        for n, h in enumerate(hashes):
            loc = self.index.where(h)
            if loc is None or loc.tier is not Tier.DEVICE:
                return n
            if self._expired(self.blocks[loc.slot], now):
                return n
        return len(hashes)

    def where(self, h: BlockHash) -> Location | None:
        """Where the block with chain hash `h` lives, or None when it is not cached."""
        return self.index.where(h)

    def num_free_among(self, block_ids: Iterable[int]) -> int:
        """How many of these blocks sit in the free queue (acquiring them uses free space)."""
        return sum(1 for b in block_ids if self.blocks[b].ref_count == 0)

    def acquire(self, block_ids: Iterable[int], retention: Retention) -> None:
        """Add a holder to each (cached) block, taking free ones out of the free queue; each
        keeps the longer of its retention and `retention`."""
        now = self.clock()
        for bid in block_ids:
            block = self.blocks[bid]
            if block.ref_count == 0:
                self.free_queue.remove(block)
            block.ref_count += 1
            block.last_use = now
            block.retention = block.retention.longest(retention)

    def register(self, block_id: int, block_hash: BlockHash, retention: Retention) -> bool:
        """Index a full, computed block under its chain hash, with the writer's retention.

        Returns False (and indexes nothing) when an equal block is already indexed, e.g.
        when two sequences computed the same prefix at once.
        """
        block = self.blocks[block_id]
        if block.block_hash is not None or block_hash in self.index:
            return False
        block.block_hash = block_hash
        block.cached_at = self.clock()
        block.retention = block.retention.longest(retention)
        self.index.add(block_hash, Location(Tier.DEVICE, block_id))
        self.evicted.forget(block_hash)
        self.counters.blocks_cached += 1
        return True

    def block_retention(self, block_id: int) -> Retention:
        return self.blocks[block_id].retention

    # -- eviction -------------------------------------------------------------------------

    def add_eviction_listener(self, listener: EvictionListener) -> None:
        """Call `listener` with each evicted block before its slot is reused."""
        self._listeners.append(listener)

    def recently_evicted(self, h: BlockHash) -> EvictedBlock | None:
        """The latest eviction of hash `h` if the bounded record still holds it."""
        return self.evicted.get(h)

    def sweep(self, force: bool = False) -> int:
        """Drop every expired block from the index (at most every `SWEEP_INTERVAL_S` unless
        `force`); returns how many were dropped."""
        now = self.clock()
        if not force and now - self._last_sweep < SWEEP_INTERVAL_S:
            return 0
        self._last_sweep = now
        expired = [
            self.blocks[loc.slot]
            for _, loc in self.index.items()
            if loc.tier is Tier.DEVICE and self._expired(self.blocks[loc.slot], now)
        ]
        for block in expired:
            self._drop(block, expired=True)
        return len(expired)

    def _expired(self, block: Block, now: float) -> bool:
        idle = block.ref_count == 0
        return self.retention.expired(block.retention, block.cached_at, block.last_use, idle, now)

    def _drop(self, block: Block, expired: bool) -> None:
        """Take a block's hash out of the index, telling the listeners first."""
        assert block.block_hash is not None
        report = EvictedBlock(
            block.block_id, block.block_hash, block.retention, block.last_use, self.clock(), expired
        )
        for listener in self._listeners:
            listener(report)
        self.index.remove(block.block_hash)
        block.block_hash = None
        if expired:
            self.counters.blocks_expired += 1
        else:
            self.counters.blocks_evicted += 1

    # -- checks ---------------------------------------------------------------------------

    def check_integrity(self, holders: Iterable[Sequence[int]]) -> None:
        """Assert free + cached + in use == total, holders match ref counts, index agrees.

        `holders` are the block tables of every live sequence.
        """
        queued = list(self.free_queue)
        assert len(queued) == len(self.free_queue), "free queue length is off"
        assert len({b.block_id for b in queued}) == len(queued), "a block is queued twice"
        uses = Counter(b for table in holders for b in table)
        free = cached = in_use = 0
        for block in self.blocks:
            assert block.ref_count == uses.get(block.block_id, 0), (
                f"block {block.block_id}: ref count {block.ref_count}, "
                f"held {uses.get(block.block_id, 0)} times"
            )
            assert block.in_free_queue == (block.ref_count == 0), (
                f"block {block.block_id}: in free queue {block.in_free_queue}, "
                f"ref count {block.ref_count}"
            )
            if block.ref_count:
                in_use += 1
            elif block.block_hash is not None:
                cached += 1
            else:
                free += 1
            if block.block_hash is not None:
                loc = self.index.where(block.block_hash)
                assert loc == Location(Tier.DEVICE, block.block_id), "block hash not indexed"
        assert free + cached + in_use == self.num_blocks, "free + cached + in use != total"
        for h, loc in self.index.items():
            if loc.tier is Tier.DEVICE:
                assert self.blocks[loc.slot].block_hash == h, f"index entry at block {loc.slot}"
