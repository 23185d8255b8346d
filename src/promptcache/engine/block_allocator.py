"""Block ids of the paged KV pool: which are free, which are in use and by how many holders.

Pure bookkeeping over integers; the tensors live in `kv_cache.py`. A block is either free
(in the free queue, reference count 0) or in use (reference count >= 1), never both.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable


class OutOfBlocksError(RuntimeError):
    """Raised when more blocks are requested than are free; callers check first."""


class BlockAllocator:
    """Hands out block ids from a fixed pool and takes them back by reference count."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError("the KV pool needs at least one block")
        self.num_blocks = num_blocks
        self._free: deque[int] = deque(range(num_blocks))
        self._ref_counts = [0] * num_blocks

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_in_use(self) -> int:
        return self.num_blocks - len(self._free)

    def can_allocate(self, n: int) -> bool:
        return n <= len(self._free)

    def allocate(self, n: int) -> list[int]:
        """Take `n` free blocks (reference count 1 each), oldest-freed first."""
        if n > len(self._free):
            raise OutOfBlocksError(f"asked for {n} blocks, {len(self._free)} free")
        blocks = [self._free.popleft() for _ in range(n)]
        for b in blocks:
            self._ref_counts[b] = 1
        return blocks

    def free(self, blocks: Iterable[int]) -> None:
        """Drop one reference to each block; a block with no references becomes free."""
        for b in blocks:
            if self._ref_counts[b] <= 0:
                raise ValueError(f"block {b} freed while not in use")
            self._ref_counts[b] -= 1
            if self._ref_counts[b] == 0:
                self._free.append(b)

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def check_integrity(self, holders: Iterable[list[int]]) -> None:
        """Assert free + in use == total and that reference counts equal the holders' uses.

        `holders` are the block tables of every live sequence.
        """
        free = set(self._free)
        assert len(free) == len(self._free), "a block is in the free queue twice"
        uses = Counter(b for table in holders for b in table)
        in_use = {b for b in range(self.num_blocks) if self._ref_counts[b] > 0}
        assert not free & in_use, f"blocks both free and in use: {sorted(free & in_use)[:8]}"
        assert len(free) + len(in_use) == self.num_blocks, "free + in use != total"
        for b in range(self.num_blocks):
            assert self._ref_counts[b] == uses.get(b, 0), (
                f"block {b}: ref count {self._ref_counts[b]} but held {uses.get(b, 0)} times"
            )
