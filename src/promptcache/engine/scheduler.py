"""Continuous batching: decide which sequences run in the next step and with how many tokens.

Each step spends at most `max_num_batched_tokens`:

    1. every running decode gets its one token (decodes are never starved by prefills);
    2. running prefills continue in chunks with what is left of the budget;
    3. waiting sequences are admitted, oldest first, while budget, blocks and
       `max_num_seqs` allow.

When blocks run out, the most recently admitted sequence not yet scheduled this step is
preempted: its blocks are freed and it goes back to the front of the queue, to be
recomputed later (never failed). The scheduler owns sequence placement only; it does not
run the model.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from promptcache.config import EngineConfig
from promptcache.engine.block_allocator import BlockAllocator
from promptcache.engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledSeq:
    """`seq` computes `num_tokens` tokens this step, starting at `seq.num_computed`."""

    seq: Sequence
    num_tokens: int


@dataclass(slots=True)
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    """Owns the waiting queue, the running list and every sequence's block table."""

    def __init__(self, config: EngineConfig, allocator: BlockAllocator) -> None:
        self.config = config
        self.allocator = allocator
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

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self._free_blocks(seq)

    def _admit(self, out: SchedulerOutput, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            seq = self.waiting[0]
            n = min(seq.num_uncomputed, budget)
            if not self.allocator.can_allocate(self._blocks_needed(seq, n)):
                break
            self.waiting.popleft()
            self._grow(seq, n)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, n))
            budget -= n

    def _reserve(self, seq: Sequence, n: int, scheduled: set[int], out: SchedulerOutput) -> bool:
        """Make room for `n` more tokens of `seq`, preempting others; False if `seq` itself went."""
        while not self.allocator.can_allocate(self._blocks_needed(seq, n)):
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
        self._free_blocks(seq)
        seq.num_computed = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    def _blocks_needed(self, seq: Sequence, n: int) -> int:
        total = -(-(seq.num_computed + n) // self.block_size)
        return max(0, total - len(seq.block_table))

    def _grow(self, seq: Sequence, n: int) -> None:
        seq.block_table.extend(self.allocator.allocate(self._blocks_needed(seq, n)))

    def _free_blocks(self, seq: Sequence) -> None:
        self.allocator.free(seq.block_table)
        seq.block_table = []
