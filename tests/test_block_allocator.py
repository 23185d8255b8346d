"""Block ids: allocation order, reference counts, freeing and the integrity check."""

from __future__ import annotations

import pytest

from promptcache.engine.block_allocator import BlockAllocator, OutOfBlocksError


def test_allocate_and_free_order() -> None:
    pool = BlockAllocator(4)
    assert pool.allocate(2) == [0, 1]
    assert pool.allocate(1) == [2]
    pool.free([1])
    assert pool.allocate(2) == [3, 1]  # oldest-freed first
    assert pool.num_free == 0 and pool.num_in_use == 4
    pool.check_integrity([[0, 2], [3, 1]])


def test_out_of_blocks_and_double_free() -> None:
    pool = BlockAllocator(2)
    blocks = pool.allocate(2)
    assert not pool.can_allocate(1)
    with pytest.raises(OutOfBlocksError):
        pool.allocate(1)
    pool.free(blocks)
    with pytest.raises(ValueError, match="freed while not in use"):
        pool.free([0])


def test_integrity_catches_wrong_holders() -> None:
    pool = BlockAllocator(3)
    pool.allocate(2)
    pool.check_integrity([[0, 1]])
    with pytest.raises(AssertionError, match="ref count"):
        pool.check_integrity([[0]])
    with pytest.raises(AssertionError, match="ref count"):
        pool.check_integrity([[0, 1], [1]])
