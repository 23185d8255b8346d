"""The prefix cache's interface to the scheduler: match at admission, register after compute.

    prompt:   | b0 | b1 | b2 | b3 | b4 | b5 |..|     full blocks hashed as a chain
    index:    | b0 | b1 | b2 | b3 |                   longest run found (4 blocks)
    hit:      | b0 | b1 | b2 |                        rounded down to the increment,
                                                      capped at len(prompt) - 1

Requests share hit blocks by reference count; nothing is copied. While a request computes
prompt blocks nobody has cached yet, it *claims* their hashes, so a second request with
the same new prefix can wait for them instead of computing them again (see `match`).
Works on hashes and block ids only; it never touches tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from promptcache.cache.block_hash import BlockHash, chain_hashes
from promptcache.cache.block_pool import BlockPool
from promptcache.cache.policy import CachePolicy
from promptcache.engine.sequence import Sequence


class CacheMatch(NamedTuple):
    """What admission may reuse for a sequence."""

    block_ids: list[int]  # cached blocks to share, in order
    hit_tokens: int  # == len(block_ids) * block_size
    wait: bool  # True: a running request is computing more of this prefix; retry next step


@dataclass(slots=True)
class CacheCounters:
    """Monotonic counters since start (prompt tokens of cacheable and other requests)."""

    queried_tokens: int = 0  # prompt tokens of requests admitted for the first time
    hit_tokens: int = 0  # of those, tokens reused from the cache
    write_tokens: int = 0  # prompt tokens newly added to the cache


class PrefixCache:
    """Matching, claiming and registering of full prompt blocks over a `BlockPool`."""

    def __init__(self, pool: BlockPool, policy: CachePolicy, block_size: int) -> None:
        if policy.increment % block_size:
            raise ValueError(
                f"increment {policy.increment} must be a multiple of the block size {block_size}"
            )
        self.pool = pool
        self.policy = policy
        self.block_size = block_size
        self.counters = CacheCounters()
        self._claims: dict[BlockHash, Sequence] = {}

    def match(self, seq: Sequence) -> CacheMatch:
        """Longest reusable cached prefix of `seq`, and whether it should wait for more."""
        if seq.cache_seed is None:
            return CacheMatch([], 0, False)
        n_blocks = seq.num_tokens // self.block_size
        self._extend_hashes(seq, n_blocks)
        hashes = seq.block_hashes[:n_blocks]
        matched = self.pool.match(hashes)
        hit = self._usable(seq, len(matched) * self.block_size)
        blocks = matched[: hit // self.block_size]
        return CacheMatch(blocks, hit, self._worth_waiting(seq, hashes, len(matched), hit))

    def on_admit(self, seq: Sequence, match: CacheMatch) -> None:
        """Record the hit (first admission only) and claim the prompt blocks left to compute."""
        seq.num_registered_blocks = len(match.block_ids)
        if seq.num_cached_tokens is None:
            seq.num_cached_tokens = match.hit_tokens
            self.counters.queried_tokens += len(seq.prompt_token_ids)
            self.counters.hit_tokens += match.hit_tokens
        if seq.cache_seed is not None:
            prompt_blocks = len(seq.prompt_token_ids) // self.block_size
            for h in seq.block_hashes[len(match.block_ids) : prompt_blocks]:
                self._claims.setdefault(h, seq)

    def on_computed(self, seq: Sequence) -> None:
        """Index the sequence's newly completed full blocks (prompt and generated)."""
        if seq.cache_seed is None:
            return
        full = seq.num_computed // self.block_size
        self._extend_hashes(seq, full)
        hashes = seq.block_hashes
        prompt_len = len(seq.prompt_token_ids)
        for i in range(seq.num_registered_blocks, full):
            if self._claims.get(hashes[i]) is seq:
                del self._claims[hashes[i]]
            if self.pool.register(seq.block_table[i], hashes[i]):
                written = max(0, min(self.block_size, prompt_len - i * self.block_size))
                seq.num_cache_write_tokens += written
                self.counters.write_tokens += written
        seq.num_registered_blocks = max(seq.num_registered_blocks, full)

    def release(self, seq: Sequence) -> None:
        """Drop the sequence's claims (it finished, was aborted or was preempted)."""
        for h in seq.block_hashes:
            if self._claims.get(h) is seq:
                del self._claims[h]

    def _usable(self, seq: Sequence, matched_tokens: int) -> int:
        if seq.num_cached_tokens is None:  # first admission: OpenAI's granularity
            return self.policy.hit_tokens(matched_tokens, len(seq.prompt_token_ids))
        # Resuming after preemption: reuse whatever survived, block by block.
        last_full = (seq.num_tokens - 1) // self.block_size * self.block_size
        return min(matched_tokens, last_full)

    def _worth_waiting(
        self, seq: Sequence, hashes: list[BlockHash], matched: int, hit: int
    ) -> bool:
        claimed = matched
        while claimed < len(hashes) and self._claims.get(hashes[claimed], seq) is not seq:
            claimed += 1
        return claimed > matched and self._usable(seq, claimed * self.block_size) > hit

    def _extend_hashes(self, seq: Sequence, n_blocks: int) -> None:
        """Make `seq.block_hashes` cover its first `n_blocks` full blocks (hashed once)."""
        assert seq.cache_seed is not None
        have = len(seq.block_hashes)
        if have < n_blocks:
            parent = seq.block_hashes[-1] if have else seq.cache_seed
            tokens = seq.tokens_slice(0, n_blocks * self.block_size)
            seq.block_hashes.extend(chain_hashes(parent, tokens, self.block_size, have))

    def check_integrity(self, live: list[Sequence]) -> None:
        """Claims belong to live sequences; pool invariants hold."""
        ids = {id(s) for s in live}
        assert all(id(s) in ids for s in self._claims.values()), "claim by a dead sequence"
        self.pool.check_integrity(s.block_table for s in live)
