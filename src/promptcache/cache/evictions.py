"""What eviction reports: the block leaving the KV pool, and a bounded record of recent ones.

The pool calls its eviction listeners *before* a cached block's slot is reused, so a
slower tier can copy the block out. The record answers "was this prefix evicted lately,
and when?" for miss diagnosis; it keeps the newest `capacity` hashes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.settings import Retention


@dataclass(frozen=True, slots=True)
class EvictedBlock:
    block_id: int
    block_hash: BlockHash
    retention: Retention
    last_use: float  # when a request last held or released the block (unix time)
    evicted_at: float  # when it left the pool (unix time)
    expired: bool = False  # its retention ran out (else: evicted for room)


EvictionListener = Callable[[EvictedBlock], None]


class EvictionRecord:
    """The most recent `capacity` evictions by hash (a hash evicted twice keeps its latest)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[BlockHash, EvictedBlock] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, block: EvictedBlock) -> None:
        if self.capacity == 0:
            return
        self._entries.pop(block.block_hash, None)
        self._entries[block.block_hash] = block
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def forget(self, h: BlockHash) -> None:
        """The hash is cached again: it no longer counts as evicted."""
        self._entries.pop(h, None)

    def get(self, h: BlockHash) -> EvictedBlock | None:
        return self._entries.get(h)
