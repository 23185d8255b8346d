"""Scheduling decisions with exact block ids and token counts (no model involved)."""

from __future__ import annotations

from promptcache.cache.block_pool import BlockPool
from promptcache.cache.policy import CachePolicy
from promptcache.cache.prefix_cache import PrefixCache
from promptcache.cache.settings import CacheSettings
from promptcache.config import EngineConfig
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence, SequenceStatus

_CACHE = PrefixCache(BlockPool(1), CachePolicy(False, 1024, 4), 4, "m")


def _scheduler(num_blocks: int, **config: int) -> Scheduler:
    cfg = EngineConfig(block_size=4, increment=4, **config)
    pool = BlockPool(num_blocks)
    return Scheduler(cfg, pool, PrefixCache(pool, CachePolicy(False, 1024, 4), 4, "m"))


def _seq(name: str, n: int) -> Sequence:
    handle = _CACHE.open(CacheSettings())  # caching off: an uncached handle
    return Sequence(name, list(range(n)), SamplingParams(temperature=0), 8, None, handle)


def _advance(sched: Scheduler) -> list[tuple[str, int]]:
    """Schedule one step and pretend the model ran it (a token sampled at each prompt end)."""
    out = sched.schedule()
    sched.on_step_done(out)
    for item in out.scheduled:
        if item.seq.num_computed == item.seq.num_tokens:
            item.seq.output_token_ids.append(7)
    return [(s.seq.request_id, s.num_tokens) for s in out.scheduled]


def test_chunked_prefill_and_budget() -> None:
    sched = _scheduler(16, max_num_batched_tokens=10)
    a, b = _seq("a", 13), _seq("b", 6)
    sched.add(a)
    sched.add(b)
    assert _advance(sched) == [("a", 10)]
    assert a.block_table == [0, 1, 2]
    assert _advance(sched) == [("a", 3), ("b", 6)]
    assert a.block_table == [0, 1, 2, 3] and b.block_table == [4, 5]
    # Both now decode: one token each, decodes first.
    assert _advance(sched) == [("a", 1), ("b", 1)]


def test_decodes_go_before_running_prefills() -> None:
    sched = _scheduler(32, max_num_batched_tokens=8)
    a = _seq("a", 3)
    sched.add(a)
    _advance(sched)  # a prefilled, now decoding
    b = _seq("b", 20)
    sched.add(b)
    assert _advance(sched) == [("a", 1), ("b", 7)]
    assert _advance(sched) == [("a", 1), ("b", 7)]


def test_max_num_seqs_limits_admission() -> None:
    sched = _scheduler(32, max_num_seqs=2)
    for name in "abc":
        sched.add(_seq(name, 4))
    assert _advance(sched) == [("a", 4), ("b", 4)]
    assert [s.request_id for s in sched.waiting] == ["c"]


def test_preempts_latest_when_blocks_run_out() -> None:
    sched = _scheduler(4)
    a, b = _seq("a", 8), _seq("b", 8)
    sched.add(a)
    sched.add(b)
    assert _advance(sched) == [("a", 8), ("b", 8)]  # all 4 blocks used
    # Each now needs a third block: b (admitted last) is preempted so a can go on.
    out = sched.schedule()
    assert [(s.seq.request_id, s.num_tokens) for s in out.scheduled] == [("a", 1)]
    assert out.preempted == [b]
    assert b.status is SequenceStatus.WAITING and b.num_computed == 0 and not b.block_table
    assert sched.waiting[0] is b
    assert a.block_table == [0, 1, 3]  # b's blocks are freed last-first
    sched.pool.check_integrity([a.block_table])


def test_queue_time_runs_from_arrival_to_the_first_placement() -> None:
    sched = _scheduler(4)
    a, b, c = _seq("a", 8), _seq("b", 8), _seq("c", 4)
    for seq in (a, b, c):
        sched.add(seq)
    assert (a.queue_time, b.queue_time, c.queue_time) == (None, None, None)
    assert _advance(sched) == [("a", 8), ("b", 8)]  # c waits: no block left
    first = b.admitted_time
    assert first is not None and c.admitted_time is None and c.queue_time is None
    assert b.queue_time == first - b.arrival_time
    assert sched.schedule().preempted == [b]  # back in the queue: still admitted once
    sched.finish(a)
    assert _advance(sched) == [("b", 9), ("c", 4)]  # b placed again, c for the first time
    assert b.admitted_time == first and b.queue_time == first - b.arrival_time
    assert c.admitted_time is not None and c.admitted_time >= first
    assert c.queue_time == c.admitted_time - c.arrival_time
