"""An O(1) LRU queue of free blocks: a doubly linked list threaded through the blocks.

    head (least recently freed) <-> ... <-> tail (most recently freed)

Allocation pops the head; freeing appends at the tail; a cache hit on a free block
unlinks it from the middle. Each operation touches a constant number of pointers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.settings import SHORTEST, Retention


@dataclass(slots=True, eq=False)
class Block:
    """One KV block's bookkeeping: who holds it, which prefix it caches, how long it should
    be kept and when it was last used, and its links in the free queue."""

    block_id: int
    ref_count: int = 0
    block_hash: BlockHash | None = None
    retention: Retention = SHORTEST
    last_use: float = 0.0  # the pool's clock when a holder last acquired or released it
    cached_at: float = 0.0  # the pool's clock when it was indexed under its hash
    prev: Block | None = None
    next: Block | None = None
    in_free_queue: bool = False


class FreeQueue:
    """Blocks with no holders, least recently freed first."""

    def __init__(self, blocks: list[Block]) -> None:
        self.head: Block | None = None
        self.tail: Block | None = None
        self.size = 0
        for b in blocks:
            self.append(b)

    def __len__(self) -> int:
        return self.size

    def append(self, block: Block) -> None:
        assert not block.in_free_queue, f"block {block.block_id} already free"
        block.prev, block.next = self.tail, None
        if self.tail is None:
            self.head = block
        else:
            self.tail.next = block
        self.tail = block
        block.in_free_queue = True
        self.size += 1

    def popleft(self) -> Block:
        if self.head is None:
            raise IndexError("no free blocks")
        block = self.head
        self.remove(block)
        return block

    def remove(self, block: Block) -> None:
        assert block.in_free_queue, f"block {block.block_id} is not free"
        if block.prev is None:
            self.head = block.next
        else:
            block.prev.next = block.next
        if block.next is None:
            self.tail = block.prev
        else:
            block.next.prev = block.prev
        block.prev = block.next = None
        block.in_free_queue = False
        self.size -= 1

    def __iter__(self) -> Iterator[Block]:
        node = self.head
        while node is not None:
            yield node
            node = node.next
