"""Scheduling decisions with exact block ids and token counts (no model involved)."""

from __future__ import annotations

from promptcache.config import EngineConfig
from promptcache.engine.block_allocator import BlockAllocator
from promptcache.engine.sampling_params import SamplingParams
from promptcache.engine.scheduler import Scheduler
from promptcache.engine.sequence import Sequence, SequenceStatus


def _seq(name: str, n: int) -> Sequence:
    return Sequence(name, list(range(n)), SamplingParams(temperature=0), 8, None)


def _advance(sched: Scheduler) -> list[tuple[str, int]]:
    """Schedule one step and pretend the model ran it (a token sampled at each prompt end)."""
    out = sched.schedule()
    for item in out.scheduled:
        item.seq.num_computed += item.num_tokens
        if item.seq.num_computed == item.seq.num_tokens:
            item.seq.output_token_ids.append(7)
    return [(s.seq.request_id, s.num_tokens) for s in out.scheduled]


def test_chunked_prefill_and_budget() -> None:
    sched = Scheduler(EngineConfig(block_size=4, max_num_batched_tokens=10), BlockAllocator(16))
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
    sched = Scheduler(EngineConfig(block_size=4, max_num_batched_tokens=8), BlockAllocator(32))
    a = _seq("a", 3)
    sched.add(a)
    _advance(sched)  # a prefilled, now decoding
    b = _seq("b", 20)
    sched.add(b)
    assert _advance(sched) == [("a", 1), ("b", 7)]
    assert _advance(sched) == [("a", 1), ("b", 7)]


def test_max_num_seqs_limits_admission() -> None:
    sched = Scheduler(EngineConfig(block_size=4, max_num_seqs=2), BlockAllocator(32))
    for name in "abc":
        sched.add(_seq(name, 4))
    assert _advance(sched) == [("a", 4), ("b", 4)]
    assert [s.request_id for s in sched.waiting] == ["c"]


def test_preempts_latest_when_blocks_run_out() -> None:
    sched = Scheduler(EngineConfig(block_size=4), BlockAllocator(4))
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
    assert a.block_table == [0, 1, 2]  # b's first block, freed first
    sched.allocator.check_integrity([a.block_table])
