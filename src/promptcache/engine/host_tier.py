"""The host tier's memory: a second, larger store of KV blocks behind the KV pool.

When the pool needs room, an unreferenced block of a long retention (`1h`, `12h`, `24h`)
is copied here before its slot is reused (shorter ones are just dropped); a later request
that matches it gets a pool block and a copy back instead of recomputing it. On a GPU the
pool is device memory and this store is pinned host memory; on a CPU both are RAM, and
this is a second budget (`host_cache_bytes`) that only long-retention prefixes use. The
slots' bookkeeping (which hash where, LRU, expiry) is `promptcache.cache.host_index.HostIndex`.

    store: (slots, num_layers, 2, num_kv_heads, block_size, head_dim)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from promptcache.cache.evictions import EvictedBlock
from promptcache.cache.host_index import HostIndex
from promptcache.cache.settings import Retention
from promptcache.engine.kv_cache import KVCache


class HostTier:
    """Copies blocks between the KV pool's tensor and a host-memory store."""

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
        self.store = torch.empty(shape, dtype=data.dtype, device="cpu", pin_memory=pin)
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
            self.store[slot].copy_(self.kv.data[:, :, :, block.block_id])

    def load(self, slot: int, block_id: int) -> None:
        """Copy a host slot into a pool block (before the step that reads it)."""
        self.kv.data[:, :, :, block_id].copy_(self.store[slot], non_blocking=True)

    @property
    def bytes_used(self) -> int:
        return len(self.index) * self.bytes_per_block
