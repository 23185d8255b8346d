"""The one protocol every retention tier behind the KV pool speaks.

A tier (host memory, files on disk; `promptcache.engine.tiers`) holds copies of blocks by
chain hash. The prefix cache looks a run of blocks up tier by tier, fastest first, has the
slow ones fetched in the background while the request waits, and at admission has each
block loaded into a fresh pool block; the engine drives the tiers' upkeep and reads their
statistics. None of them is special-cased: what differs (a tier that keeps evicted blocks,
one that is written through, one that must be read before it loads) is in the methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.evictions import EvictedBlock
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import Retention


@dataclass(frozen=True, slots=True)
class PoolBlock:
    """A full block in the KV pool, as the tiers are offered it."""

    block_hash: BlockHash  # its chain hash
    parent: BlockHash  # the chain hash before it (the seed for a first block)
    token_ids: list[int]
    block_id: int  # where it lies in the pool
    retention: Retention


@runtime_checkable
class LowerTier(Protocol):
    """A store of KV blocks behind the pool, as the prefix cache and the engine drive it."""

    @property
    def tier(self) -> Tier:
        """Which tier this is: the `Location`s it hands out name it."""

    def lookup(self, h: BlockHash) -> Location | None:
        """Where block `h` is held here, or None (an expired entry is dropped on the way)."""

    def fetch(self, hashes: list[BlockHash]) -> None:
        """Start making these blocks loadable (a background read where loading needs one)."""

    def fetching(self, hashes: list[BlockHash]) -> bool:
        """Whether any of these is still being fetched."""

    def ready(self, h: BlockHash) -> bool:
        """Whether block `h` can be loaded into the pool now."""

    def pin(self, hashes: list[BlockHash]) -> None:
        """Keep these blocks while they are loaded (nothing evicts them meanwhile)."""

    def unpin(self, hashes: list[BlockHash]) -> None:
        """The blocks are loaded (or the load failed): they may be evicted again."""

    def load(self, where: Location, h: BlockHash, block_id: int) -> None:
        """Copy block `h` into pool block `block_id`; it is this tier's latest used now."""

    def writes_through(self, retention: Retention) -> bool:
        """Whether `store` keeps blocks of `retention` (the cache skips it otherwise)."""

    def store(self, block: PoolBlock) -> None:
        """`block` was computed or reused: a write-through tier keeps a copy now."""

    def on_evict(self, block: EvictedBlock) -> None:
        """The pool is about to reuse `block`'s slot: a tier that keeps evicted blocks
        copies it now."""

    def sweep(self) -> None:
        """Upkeep between steps: drop what expired (at most every few seconds)."""

    def wait(self, timeout: float) -> None:
        """Block until nothing is being fetched, or `timeout` seconds."""

    def stats(self) -> dict[str, int]:
        """The tier's figures by name (`<tier>_...`; counters are totals since start)."""

    def check_integrity(self) -> None:
        """Assert the tier's bookkeeping is consistent."""

    def close(self) -> None:
        """Finish pending work and stop any threads."""
