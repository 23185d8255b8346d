"""The host tier's memory: a second, larger store of KV blocks behind the KV pool.

When the pool needs room, an unreferenced block of a long retention (`1h`, `12h`, `24h`)
is copied here before its slot is reused (shorter ones are just dropped); a later request
that matches it gets a pool block and a copy back instead of recomputing it. On a GPU the
pool is device memory and this store is pinned host memory; on a CPU both are RAM, and
this is a second budget (`host_cache_bytes`) that only long-retention prefixes use. The
slots' bookkeeping (which hash where, LRU, expiry) is `HostIndex` (`index.py` beside this).
It speaks `promptcache.cache.tiers.LowerTier`: blocks are ready at once (no fetch), kept when
the pool evicts them, never written through.

    memory: (slots, num_layers, 2, num_kv_heads, block_size, head_dim)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.evictions import EvictedBlock
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import Retention
from promptcache.cache.tiers import PoolBlock
from promptcache.engine.kv_cache import KVCache
from promptcache.engine.tiers.host.index import HostIndex


class HostTier:
    """Copies blocks between the KV pool's tensor and a host-memory store."""

    tier = Tier.HOST
    EMPTY_STATS: ClassVar[dict[str, int]] = {
        "host_blocks": 0,
        "host_bytes": 0,
        "host_slots": 0,
    }  # with no host tier

    def __init__(
        self, kv_cache: KVCache, index: HostIndex, ttl_of: Callable[[Retention], float]
    ) -> None:
        """`ttl_of(retention)`: how long an entry of that retention may sit idle."""
        self.kv = kv_cache
        self.index = index
        self.ttl_of = ttl_of
        data = kv_cache.data
        shape = (index.num_slots, data.shape[0], data.shape[1], data.shape[2], *data.shape[4:])
        pin = data.device.type == "cuda"
        self.memory = torch.empty(shape, dtype=data.dtype, device="cpu", pin_memory=pin)
        self.bytes_per_block = kv_cache.bytes_per_block

    @staticmethod
    def slots_for(kv_cache: KVCache, budget_bytes: int) -> int:
        return budget_bytes // kv_cache.bytes_per_block

    def on_evict(self, block: EvictedBlock) -> None:
        """Eviction listener: keep a copy of a long-retention block evicted for room."""
        if block.expired or not block.retention.offloaded:
            return
        slot = self.index.put(block.block_hash, self.ttl_of(block.retention))
        if slot is not None:
            self.memory[slot].copy_(self.kv.data[:, :, :, block.block_id])

    def lookup(self, h: BlockHash) -> Location | None:
        slot = self.index.peek(h)
        return None if slot is None else Location(Tier.HOST, slot)

    def fetch(self, hashes: list[BlockHash]) -> None:
        """Host blocks load at once: nothing to fetch."""

    def fetching(self, hashes: list[BlockHash]) -> bool:
        return False

    def ready(self, h: BlockHash) -> bool:
        return True

    def pin(self, hashes: list[BlockHash]) -> None:
        self.index.pin(hashes)

    def unpin(self, hashes: list[BlockHash]) -> None:
        self.index.unpin(hashes)

    def load(self, where: Location, h: BlockHash, block_id: int) -> None:
        """Copy host slot `where.slot` into pool block `block_id` (before the step that
        reads it); the entry becomes the most recently used."""
        self.kv.data[:, :, :, block_id].copy_(self.memory[where.slot], non_blocking=True)
        self.index.touch(h)
        self.index.counters.loads += 1

    def writes_through(self, retention: Retention) -> bool:
        return False

    def store(self, block: PoolBlock) -> None:
        """Not written through: the host tier takes blocks when the pool evicts them."""

    def sweep(self) -> None:
        """Expired entries go as they are looked up (`HostIndex.peek`)."""

    def wait(self, timeout: float) -> None:
        """Nothing is ever fetched."""

    @property
    def bytes_used(self) -> int:
        return len(self.index) * self.bytes_per_block

    def stats(self) -> dict[str, int]:
        c = self.index.counters
        return {
            "host_blocks": len(self.index),
            "host_bytes": self.bytes_used,
            "host_slots": self.index.num_slots,
            "host_writes_total": c.writes,
            "host_loads_total": c.loads,
            "host_bytes_written_total": c.writes * self.bytes_per_block,
            "host_bytes_loaded_total": c.loads * self.bytes_per_block,
            "host_evicted_total": c.evicted,
            "host_expired_total": c.expired,
        }

    def check_integrity(self) -> None:
        self.index.check_integrity()

    def close(self) -> None:
        """No threads, nothing pending."""
