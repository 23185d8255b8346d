"""Block pool bookkeeping with exact block ids: allocation, LRU eviction, sharing, integrity."""

from __future__ import annotations

import hashlib

import pytest

from promptcache.cache.block_hash import BlockHash, chain_hashes, hash_block, seed_hash
from promptcache.cache.block_pool import BlockPool, OutOfBlocksError
from promptcache.cache.expiry import RetentionPolicy
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import SHORTEST, Retention
from promptcache.engine.tiers.host.index import HostIndex
from tests.helpers import FakeClock

KEEP = Retention.IN_MEMORY


def _h(i: int) -> BlockHash:
    return hash_block(seed_hash("m", None), [i])


def test_allocate_and_free_order() -> None:
    pool = BlockPool(4)
    assert pool.allocate(2) == [0, 1]
    assert pool.allocate(1) == [2]
    pool.free([1])
    assert pool.allocate(2) == [3, 1]  # least recently freed first
    assert pool.num_free == 0 and pool.num_in_use == 4
    pool.check_integrity([[0, 2], [3, 1]])


def test_out_of_blocks_and_double_free() -> None:
    pool = BlockPool(2)
    blocks = pool.allocate(2)
    assert not pool.can_allocate(1)
    with pytest.raises(OutOfBlocksError):
        pool.allocate(1)
    pool.free(blocks)
    with pytest.raises(ValueError, match="freed while not in use"):
        pool.free([0])


def test_lru_eviction_order() -> None:
    pool = BlockPool(4)
    a, b = pool.allocate(2), pool.allocate(2)  # a = [0, 1], b = [2, 3]
    for bid, h in zip(a + b, [_h(0), _h(1), _h(2), _h(3)], strict=True):
        assert pool.register(bid, h, KEEP)
    pool.free(reversed(a))  # a ends first: queue 1, 0
    pool.free(reversed(b))  # then b: queue 1, 0, 3, 2
    assert pool.num_cached == 4 and pool.num_free == 4
    assert pool.match([_h(0), _h(1)]) == [0, 1]
    assert pool.allocate(1) == [1]  # a's tail goes first ...
    assert pool.match([_h(0), _h(1)]) == [0]  # ... so a's prefix still hits
    assert pool.counters.blocks_evicted == 1
    pool.acquire([2], KEEP)  # a hit on b's first block takes it out of the queue
    assert pool.allocate(2) == [0, 3]
    assert pool.match([_h(2)]) == [2] and pool.match([_h(0)]) == []
    assert pool.counters.blocks_evicted == 3
    pool.check_integrity([[1], [2], [0, 3]])


def test_shared_block_reference_counts() -> None:
    pool = BlockPool(3)
    [b] = pool.allocate(1)
    pool.register(b, _h(9), KEEP)
    pool.acquire([b], KEEP)
    pool.acquire([b], KEEP)
    assert pool.ref_count(b) == 3
    pool.check_integrity([[b], [b], [b]])
    pool.free([b])
    pool.free([b])
    assert pool.ref_count(b) == 1 and pool.num_free == 2
    pool.free([b])
    assert pool.ref_count(b) == 0 and pool.num_free == 3 and pool.match([_h(9)]) == [b]
    pool.check_integrity([])


def test_register_refuses_duplicates() -> None:
    pool = BlockPool(2)
    x, y = pool.allocate(2)
    assert pool.register(x, _h(1), KEEP)
    assert not pool.register(y, _h(1), KEEP)  # same content computed twice: first one wins
    assert not pool.register(x, _h(2), KEEP)  # a block is indexed once
    assert pool.match([_h(1)]) == [x] and pool.num_cached == 1
    pool.check_integrity([[x], [y]])


def test_integrity_catches_wrong_holders() -> None:
    pool = BlockPool(3)
    pool.allocate(2)
    pool.check_integrity([[0, 1]])
    with pytest.raises(AssertionError, match="ref count"):
        pool.check_integrity([[0]])
    with pytest.raises(AssertionError, match="ref count"):
        pool.check_integrity([[0, 1], [1]])


def test_chain_hash_is_stable_and_salted() -> None:
    tokens = list(range(40))
    a = chain_hashes(seed_hash("m", "tenant-a"), tokens, 16)
    assert len(a) == 2  # only full blocks
    assert a == chain_hashes(seed_hash("m", "tenant-a"), tokens, 16)
    assert set(a).isdisjoint(chain_hashes(seed_hash("m", "tenant-b"), tokens, 16))
    assert set(a).isdisjoint(chain_hashes(seed_hash("other-model", "tenant-a"), tokens, 16))
    # The documented encoding, recomputed independently: the same on every machine.
    seed = hashlib.sha256(b"promptcache-kv/1" + b"\x01\0\0\0m" + b"\0\0\0\0").digest()
    tokens_le = b"".join(i.to_bytes(4, "little") for i in (1, 2, 3))
    expected = hashlib.sha256(seed + tokens_le).hexdigest()
    assert expected.startswith("eaa58176672d5cf2")
    assert hash_block(seed_hash("m", None), [1, 2, 3]).hex() == expected
    # Continuing a chain from a middle block gives the same hashes.
    assert chain_hashes(a[0], tokens[16:], 16) == a[1:]


def test_eviction_is_reported_before_the_slot_is_reused() -> None:
    pool = BlockPool(2, eviction_history=8)
    seen: list[tuple[int, bytes, Retention, float, bool]] = []
    pool.add_eviction_listener(
        lambda e: seen.append(
            (
                e.block_id,
                e.block_hash,
                e.retention,
                e.last_use,
                pool.where(e.block_hash) is not None,
            )
        )
    )
    a, b = pool.allocate(2)
    assert pool.register(a, _h(1), Retention.EXTENDED)
    assert pool.register(b, _h(2), KEEP)
    pool.free([a])
    freed_at = pool.blocks[a].last_use
    assert freed_at > 0
    assert pool.allocate(1) == [a]
    # The listener saw the block while it was still indexed, with its retention and last use.
    assert seen == [(a, _h(1), Retention.EXTENDED, freed_at, True)]
    assert pool.where(_h(1)) is None
    assert pool.where(_h(2)) == Location(Tier.DEVICE, b)
    record = pool.recently_evicted(_h(1))
    assert record is not None and record.retention is Retention.EXTENDED
    assert record.evicted_at >= freed_at
    assert pool.recently_evicted(_h(2)) is None
    pool.free([a, b])
    pool.check_integrity([])


def test_longest_retention_wins_and_resets_on_reuse() -> None:
    pool = BlockPool(1)
    [x] = pool.allocate(1)
    pool.register(x, _h(3), Retention.EXTENDED)
    pool.acquire([x], KEEP)  # an in_memory reader keeps the block's 24h
    assert pool.block_retention(x) is Retention.EXTENDED
    pool.free([x, x])
    assert pool.allocate(1) == [x]  # evicted and reused: a fresh block
    assert pool.block_retention(x) is SHORTEST  # a fresh block
    pool.register(x, _h(4), KEEP)
    pool.free([x])
    pool.acquire([x], Retention.EXTENDED)
    assert pool.block_retention(x) is Retention.EXTENDED
    pool.free([x])


def test_eviction_record_is_bounded() -> None:
    pool = BlockPool(1, eviction_history=2)
    for i in range(4):
        [x] = pool.allocate(1)
        pool.register(x, _h(10 + i), KEEP)
        pool.free([x])
    pool.allocate(1)  # evicts _h(13)
    assert len(pool.evicted) == 2
    assert pool.recently_evicted(_h(12)) is not None and pool.recently_evicted(_h(13)) is not None
    assert pool.recently_evicted(_h(11)) is None  # the oldest fell out
    # A hash cached again no longer counts as evicted.
    pool.free([0])
    [x] = pool.allocate(1)
    pool.register(x, _h(13), KEEP)
    assert pool.recently_evicted(_h(13)) is None


def _cached_block(pool: BlockPool, h: BlockHash, retention: Retention) -> int:
    [b] = pool.allocate(1)
    assert pool.register(b, h, retention)
    pool.free([b])
    return b


def test_in_memory_block_dropped_after_its_idle_time() -> None:
    clock = FakeClock()
    pool = BlockPool(4, eviction_history=8, clock=clock)
    b = _cached_block(pool, _h(1), KEEP)
    clock.now += 600  # exactly the ttl: still kept
    assert pool.match([_h(1)]) == [b]
    clock.now += 1
    assert pool.match([_h(1)]) == []  # dropped lazily at lookup
    assert pool.counters.blocks_expired == 1 and pool.counters.blocks_evicted == 0
    record = pool.recently_evicted(_h(1))
    assert record is not None and record.expired
    pool.check_integrity([])


def test_in_memory_block_dropped_after_its_maximum_even_when_reused() -> None:
    clock = FakeClock()
    pool = BlockPool(4, clock=clock)
    b = _cached_block(pool, _h(2), KEEP)
    for _ in range(11):  # reused every 5 minutes: never idle past 10 minutes
        clock.now += 300
        assert pool.match([_h(2)]) == [b]
        pool.acquire([b], KEEP)
        pool.free([b])
    clock.now += 301  # 3,601 s since first cached
    pool.acquire([b], KEEP)  # even while in use, it is no longer shared
    assert pool.match([_h(2)]) == []
    pool.free([b])
    pool.check_integrity([])


def test_24h_block_kept_and_longest_retention_wins() -> None:
    clock = FakeClock()
    pool = BlockPool(4, clock=clock)
    long = _cached_block(pool, _h(3), Retention.EXTENDED)
    shared = _cached_block(pool, _h(4), KEEP)
    pool.acquire([shared], Retention.EXTENDED)  # a 24h reader of an in_memory block
    pool.free([shared])
    clock.now += 2 * 3600
    assert pool.match([_h(3)]) == [long] and pool.match([_h(4)]) == [shared]
    clock.now += 22 * 3600 + 1  # a day and a second since last use
    assert pool.sweep() == 2  # the sweep drops them without a lookup
    assert pool.num_cached == 0 and pool.counters.blocks_expired == 2
    pool.check_integrity([])


def test_sweep_runs_at_most_every_interval() -> None:
    clock = FakeClock()
    pool = BlockPool(4, retention=RetentionPolicy(in_memory_ttl=1), clock=clock)
    _cached_block(pool, _h(5), KEEP)
    clock.now += 2  # expired, but the last sweep (at creation) was 2 s ago
    assert pool.sweep() == 0 and pool.num_cached == 1
    assert pool.sweep(force=True) == 1 and pool.num_cached == 0
    _cached_block(pool, _h(6), KEEP)
    clock.now += 10
    assert pool.sweep() == 1


def test_host_index_lru_pins_and_expiry() -> None:
    clock = FakeClock()
    host = HostIndex(2, ttl=100, clock=clock)
    a, b, c = _h(20), _h(21), _h(22)
    sa, sb = host.put(a), host.put(b)
    assert {sa, sb} == {0, 1} and host.put(a) is None  # already held: only touched
    host.pin([b])
    assert host.put(c) == sa  # full: the least recently used unpinned entry (a) goes
    assert host.peek(a) is None and host.peek(b) == sb and host.counters.evicted == 1
    host.pin([c])
    assert host.put(_h(23)) is None  # every entry is being loaded: nothing to evict
    host.unpin([b, c])
    clock.now += 101
    assert host.peek(b) is None and host.counters.expired == 1  # idle past its ttl
    host.check_integrity()
