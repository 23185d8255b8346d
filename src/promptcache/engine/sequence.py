"""One request's state inside the engine: its tokens, progress, blocks and timing."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from promptcache.cache.block_hash import BlockHash
from promptcache.engine.sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, or preempted and waiting to be recomputed
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"  # cancelled by the caller


@dataclass(slots=True, eq=False)
class Sequence:
    """A request being generated. `num_computed` tokens already have K/V in `block_table`."""

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    generator: torch.Generator | None
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_preemptions: int = 0
    # Prefix cache: `cache_seed` is None when this request is not cached (too short, off).
    cache_seed: BlockHash | None = None
    block_hashes: list[BlockHash] = field(default_factory=list)  # full blocks hashed so far
    num_registered_blocks: int = 0  # leading blocks of block_table already in the index
    num_cached_tokens: int | None = None  # prompt tokens reused, fixed at first admission
    num_cache_write_tokens: int = 0  # prompt tokens this request added to the cache
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    finish_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_uncomputed(self) -> int:
        return self.num_tokens - self.num_computed

    @property
    def is_decoding(self) -> bool:
        """True when only the newest token lacks K/V (one token per step)."""
        return self.num_uncomputed == 1 and bool(self.output_token_ids)

    def token_at(self, index: int) -> int:
        n = len(self.prompt_token_ids)
        return self.prompt_token_ids[index] if index < n else self.output_token_ids[index - n]

    def tokens_slice(self, start: int, stop: int) -> list[int]:
        n = len(self.prompt_token_ids)
        if stop <= n:
            return self.prompt_token_ids[start:stop]
        return (self.prompt_token_ids + self.output_token_ids)[start:stop]

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
