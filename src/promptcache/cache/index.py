"""The hash index: where the KV of a chain hash lives.

The KV block pool (device memory on a GPU, RAM on a CPU) indexes its blocks here. A
`Location` names a tier and the slot inside it; the slower tiers (host memory, disk) keep
their own indexes (`promptcache.engine.tiers`, behind `promptcache.cache.tiers.LowerTier`),
and a prefix match reports the tier each block will come from as a `Location` too.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash


class Tier(enum.Enum):
    DEVICE = "device"  # the KV block pool the model reads from
    HOST = "host"  # the host tier: a copy in host memory
    DISK = "disk"  # the disk tier: a file under disk_cache_dir


@dataclass(frozen=True, slots=True)
class Location:
    tier: Tier
    slot: int  # block id in the KV pool, slot in the host tier, -1 on disk


Loader = Callable[[Location, BlockHash, int], None]  # (where, hash, pool block id): copy in


class HashIndex:
    """Chain hash -> location, one entry per hash."""

    def __init__(self) -> None:
        self._entries: dict[BlockHash, Location] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, h: BlockHash) -> bool:
        return h in self._entries

    def where(self, h: BlockHash) -> Location | None:
        """Where the block with hash `h` lives, or None when no tier holds it."""
        return self._entries.get(h)

    def add(self, h: BlockHash, location: Location) -> None:
        assert h not in self._entries, "a hash is indexed once"
        self._entries[h] = location

    def remove(self, h: BlockHash) -> None:
        del self._entries[h]

    def items(self) -> Iterator[tuple[BlockHash, Location]]:
        return iter(self._entries.items())
