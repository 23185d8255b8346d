"""The hash index: where the KV of a chain hash lives.

Today every cached block lives in one tier, the KV block pool (device memory on a GPU,
RAM on a CPU). A `Location` names the tier and the slot inside it, so slower tiers (host
memory, disk) can add entries of their own and a lookup says where a prefix can be found.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash


class Tier(enum.Enum):
    DEVICE = "device"  # the KV block pool the model reads from


@dataclass(frozen=True, slots=True)
class Location:
    tier: Tier
    slot: int  # block id in the KV pool


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
