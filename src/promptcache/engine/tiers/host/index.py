"""Bookkeeping of the host tier: which chain hashes have a copy in host memory, in which
slot, least recently used first.

The host tier holds long-retention blocks (`1h` and up) that the KV pool evicted for room,
so a later request can load them back instead of recomputing them. This module only maps
hashes to slots (the tensors live in `tier.py` beside it). An entry expires once
idle for its retention's time, as in the pool (`ttl`, the `24h` time, unless `put` names
another).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash


@dataclass(slots=True)
class HostCounters:
    writes: int = 0  # blocks copied in from the pool
    loads: int = 0  # blocks copied back to the pool for a request
    evicted: int = 0  # entries dropped for room (least recently used)
    expired: int = 0  # entries dropped because their retention ran out


class HostIndex:
    """Hash -> slot over `num_slots` slots, LRU, with idle expiry."""

    def __init__(self, num_slots: int, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self.num_slots = num_slots
        self.ttl = ttl
        self.clock = clock
        self._free = list(range(num_slots - 1, -1, -1))
        # slot, last use, idle time allowed
        self._slots: OrderedDict[BlockHash, tuple[int, float, float]] = OrderedDict()
        self._pinned: set[BlockHash] = set()  # being loaded: never evicted meanwhile
        self.counters = HostCounters()

    def __len__(self) -> int:
        return len(self._slots)

    def peek(self, h: BlockHash) -> int | None:
        """The slot holding `h`, or None (an expired entry is dropped on the way)."""
        entry = self._slots.get(h)
        if entry is None:
            return None
        slot, last_use, ttl = entry
        if self.clock() - last_use > ttl:
            self._release(h, slot)
            self.counters.expired += 1
            return None
        return slot

    def touch(self, h: BlockHash) -> None:
        """`h` was used: it becomes the most recently used entry."""
        slot, _, ttl = self._slots[h]
        self._slots[h] = (slot, self.clock(), ttl)
        self._slots.move_to_end(h)

    def put(self, h: BlockHash, ttl: float | None = None) -> int | None:
        """A slot to copy block `h` (idle time allowed: `ttl`, default the index's) into,
        None if it is already held; frees the least recently used entry when full."""
        if h in self._slots:
            self.touch(h)
            return None
        if not self._free:
            victim = next((k for k in self._slots if k not in self._pinned), None)
            if victim is None:
                return None  # no slots, or every entry is being loaded
            self._release(victim, self._slots[victim][0])
            self.counters.evicted += 1
        slot = self._free.pop()
        self._slots[h] = (slot, self.clock(), self.ttl if ttl is None else ttl)
        self.counters.writes += 1
        return slot

    def pin(self, hashes: list[BlockHash]) -> None:
        """Keep these entries while their blocks are copied back to the pool."""
        self._pinned.update(hashes)

    def unpin(self, hashes: list[BlockHash]) -> None:
        self._pinned.difference_update(hashes)

    def _release(self, h: BlockHash, slot: int) -> None:
        del self._slots[h]
        self._free.append(slot)

    def check_integrity(self) -> None:
        held = [slot for slot, _, _ in self._slots.values()]
        assert len(set(held)) == len(held), "a host slot is held twice"
        assert not set(held) & set(self._free), "a host slot is both held and free"
        assert len(held) + len(self._free) == self.num_slots, "host slots lost"
