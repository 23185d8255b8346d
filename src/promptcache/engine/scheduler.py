"""Continuous batching: decide which sequences run in the next step and with how many tokens.

Each step spends at most `max_num_batched_tokens`:

    1. every running decode gets its one token (decodes are never starved by prefills);
    2. running prefills continue in chunks with what is left of the budget;
    3. waiting sequences are admitted, oldest first, while budget, blocks and
       `max_num_seqs` allow. Admission first shares the longest cached prefix (the
       prefix cache), so only the rest of the prompt is computed. A sequence whose next
       prompt blocks are being computed right now by another running sequence waits a
       step instead of computing them twice.

A prefill-only request (a prewarm) computes its prompt only up to `seq.compute_end`;
one admitted with all of that already cached has nothing to run and is reported `ready`.

When blocks run out, the most recently admitted sequence not yet scheduled this step is
preempted: its blocks are released and it goes back to the front of the queue, to be
recomputed later (its cached blocks may still be there). The scheduler owns placement and
block tables; it does not run the model.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from promptcache.cache.block_pool import BlockPool
from promptcache.cache.handle import CacheMatch
from promptcache.cache.prefix_cache import Loader, PrefixCache
from promptcache.config import EngineConfig
from promptcache.engine.sequence import Sequence, SequenceStatus
from promptcache.util import cdiv


@dataclass(slots=True)
class ScheduledSeq:
    """`seq` computes `num_tokens` tokens this step, starting at `seq.num_computed`."""

    seq: Sequence
    num_tokens: int


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    ready: list[Sequence] = field(default_factory=list)  # admitted with nothing to compute

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    """Owns the waiting queue, the running list and every sequence's block table."""

    def __init__(
        self,
        config: EngineConfig,
        pool: BlockPool,
        cache: PrefixCache,
        loader: Loader | None = None,
    ) -> None:
        self.config = config
        self.pool = pool
        self.cache = cache
        self.loader = loader  # copies host- and disk-tier blocks into the pool
        self.block_size = config.block_size
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        decodes = [s for s in self.running if s.is_decoding]
        prefills = [s for s in self.running if not s.is_decoding]
        scheduled: set[int] = set()
        for seq in decodes + prefills:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted earlier in this loop
            n = min(seq.num_uncomputed, budget)
            if self._reserve(seq, n, scheduled, out):
                out.scheduled.append(ScheduledSeq(seq, n))
                scheduled.add(id(seq))
                budget -= n
        if not out.preempted:
            self._admit(out, budget)
        return out

    def on_step_done(self, out: SchedulerOutput) -> None:
        """The model computed the step: advance progress and cache completed blocks."""
        for item in out.scheduled:
            seq = item.seq
            seq.num_computed += item.num_tokens
            self.cache.on_computed(seq.cache, seq, seq.block_table, seq.num_computed)

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out and release its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._release(seq)

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        deferred: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting.popleft()
            match = self.cache.match(seq.cache, seq)
            if match.wait:
                deferred.append(seq)
                continue
            n = min(seq.compute_end - match.hit_tokens, budget)
            if not self._fits(seq, match, n):
                self.waiting.appendleft(seq)
                break
            self._place(seq, match, n)
            if n:
                out.scheduled.append(ScheduledSeq(seq, n))
            else:  # a prewarm whose whole target was cached
                out.ready.append(seq)
            budget -= n
        self.waiting.extendleft(reversed(deferred))

    def _fits(self, seq: Sequence, match: CacheMatch, n: int) -> bool:
        new_blocks = cdiv(match.hit_tokens + n, self.block_size) - len(match.block_ids)
        return self.pool.can_allocate(new_blocks + self.pool.num_free_among(match.held_ids))

    def _place(self, seq: Sequence, match: CacheMatch, n: int) -> None:
        self.cache.on_admit(seq.cache, match, seq)  # holds the hit blocks
        seq.block_table = list(match.block_ids)
        if (match.loads or match.partial) and self.loader is not None:
            self.cache.load_lower(seq.cache, match, seq, seq.block_table, self.loader)
        seq.num_computed = match.hit_tokens
        self._grow(seq, n)
        seq.status = SequenceStatus.RUNNING
        if seq.admitted_time is None:
            seq.admitted_time = time.perf_counter()
        self.running.append(seq)

    def _reserve(self, seq: Sequence, n: int, scheduled: set[int], out: SchedulerOutput) -> bool:
        """Make room for `n` more tokens of `seq`, preempting others; False if `seq` went."""
        while not self.pool.can_allocate(self._blocks_needed(seq, n)):
            victim = next((s for s in reversed(self.running) if id(s) not in scheduled), None)
            if victim is None:
                raise RuntimeError("KV pool too small for a single sequence")
            self._preempt(victim, out)
            if victim is seq:
                return False
        self._grow(seq, n)
        return True

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.num_computed = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    def _blocks_needed(self, seq: Sequence, n: int) -> int:
        total = cdiv(seq.num_computed + n, self.block_size)
        return max(0, total - len(seq.block_table))

    def _grow(self, seq: Sequence, n: int) -> None:
        seq.block_table.extend(self.pool.allocate(self._blocks_needed(seq, n)))

    def _release(self, seq: Sequence) -> None:
        self.cache.release(seq.cache)
        self.pool.free(reversed(seq.block_table))  # tail first: the prefix stays cached longest
        seq.block_table = []
