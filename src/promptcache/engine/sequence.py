"""One request's state inside the engine: its tokens, progress, blocks and timing."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import torch

from promptcache.cache.handle import CacheHandle
from promptcache.engine.grammar.mask import Matcher
from promptcache.engine.logits import TokenCounts
from promptcache.engine.outputs import TokenLogprob
from promptcache.engine.sampling_params import SamplingParams
from promptcache.text.chat import MessageSpan


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # queued, or preempted and waiting to be recomputed
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"  # EOS, a stop token or a stop string
    LENGTH = "length"  # max_tokens or the context length
    ABORT = "abort"  # cancelled by the caller
    GRAMMAR = "grammar"  # the output's grammar could take no further token


@dataclass(slots=True, eq=False)
class Sequence:
    """A request being generated. `num_computed` tokens already have K/V in `block_table`.

    `cache` is the prefix cache's handle for this request (owned and written by the cache;
    it carries the request's cache settings). `messages` says where each rendered message
    ends in the prompt (empty for a raw prompt). `matcher` constrains the output to its
    grammar, if it has one. `prefill_end` is set on a prefill-only request (a prewarm): it
    computes the prompt up to there (the end of what it caches), samples nothing and
    finishes; None on a request that generates.
    """

    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    max_tokens: int
    generator: torch.Generator | None
    cache: CacheHandle
    messages: tuple[MessageSpan, ...] = ()
    matcher: Matcher | None = None
    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    block_table: list[int] = field(default_factory=list)
    num_computed: int = 0
    num_preemptions: int = 0
    arrival_time: float = field(default_factory=time.perf_counter)
    admitted_time: float | None = None  # its first placement by the scheduler
    first_token_time: float | None = None
    finish_time: float | None = None
    counts: TokenCounts | None = None  # output token counts, for penalties
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per output token
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)  # prompt tokens 1..
    prefill_end: int | None = None
    # A resumed request (`GenerationRequest.resumed`): the prompt's tail that is its own
    # earlier output, and the sampler draws still to skip for it (taken before its first).
    earlier_output: list[int] = field(default_factory=list)
    draws_to_skip: int = 0

    @property
    def queue_time(self) -> float | None:
        """Seconds from arrival to admission (None while never admitted); a preempted
        sequence's later placements do not count."""
        return None if self.admitted_time is None else self.admitted_time - self.arrival_time

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def samples(self) -> bool:
        """Whether the request samples tokens (False for a prefill-only request)."""
        return self.prefill_end is None

    @property
    def compute_end(self) -> int:
        """Tokens the request needs K/V for: every known token, or a prefill-only request's
        `prefill_end`."""
        return self.num_tokens if self.prefill_end is None else self.prefill_end

    @property
    def reuse_limit(self) -> int:
        """The most leading tokens admission may reuse from the cache: all but the last
        known token when the request samples (its logits start decoding: it is always
        computed), the whole of `prefill_end` otherwise."""
        return self.num_tokens - 1 if self.prefill_end is None else self.prefill_end

    @property
    def num_uncomputed(self) -> int:
        return self.compute_end - self.num_computed

    @property
    def prefilled(self) -> bool:
        """A prefill-only request whose whole target has K/V: it is done."""
        return self.prefill_end is not None and self.num_computed >= self.prefill_end

    @property
    def is_decoding(self) -> bool:
        """True when only the newest token lacks K/V (one token per step)."""
        return self.num_uncomputed == 1 and bool(self.output_token_ids)

    def tokens_slice(self, start: int, stop: int) -> list[int]:
        """Tokens [start, stop) of prompt + output, copying only that range."""
        n = len(self.prompt_token_ids)
        if stop <= n:
            return self.prompt_token_ids[start:stop]
        if start >= n:
            return self.output_token_ids[start - n : stop - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - n]

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
