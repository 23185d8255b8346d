"""Per-request cache state, owned by the prefix cache: the handle, and what a match found.

The engine keeps one `CacheHandle` per request and passes it back on every cache call; only
`promptcache.cache` writes it. A `CacheMatch` keeps the raw matched length beside the hit
it allows and the reason the two differ: the raw material of "why did I miss the cache?".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from promptcache.cache.block_hash import BlockHash
from promptcache.cache.evictions import EvictedBlock
from promptcache.cache.index import Location, Tier
from promptcache.cache.settings import CacheSettings


class MatchReason(enum.Enum):
    """Why a request's physical reuse is what it is (reporting rules apply afterwards)."""

    DISABLED = "disabled"  # prefix caching is off
    NOT_READ = "not_read"  # the request reads nothing (its settings say so); it still writes
    NOT_FOUND = "not_found"  # not even the first block of the prompt was cached
    FULL = "full"  # the whole match is reused
    LAST_TOKEN = "last_token"  # the match reached the last block: its last token is computed
    WAITING = "waiting"  # another request computes more of this prefix, or its disk blocks
    # are being read: retry next step
    RESUMED = "resumed"  # re-admitted after preemption: reuses what survived, block by block


@dataclass(frozen=True, slots=True)
class CacheMatch:
    """What admission may reuse for a request."""

    block_ids: list[int]  # cached blocks to share, in order
    hit_tokens: int  # tokens reused physically: (len(block_ids) + len(loads)) * block size,
    # plus the partial block's tokens
    matched_tokens: int  # tokens of the longest cached run, before the last-token limit
    reason: MatchReason
    evicted: EvictedBlock | None = None  # the block after the match, if it was evicted lately
    loads: list[Location] = field(default_factory=list)  # the next blocks, on host or disk
    partial: Location | None = None  # a breakpoint's partial block, copied after them
    partial_hash: BlockHash | None = None
    breakpoint_tokens: int = 0  # the longest explicit breakpoint the hit covers

    @property
    def wait(self) -> bool:
        return self.reason is MatchReason.WAITING

    @property
    def held_ids(self) -> list[int]:
        """Pool blocks admission holds: the shared ones, and a pool-resident partial
        block while it is copied."""
        partial = self.partial
        if partial is not None and partial.tier is Tier.DEVICE:
            return [*self.block_ids, partial.slot]
        return self.block_ids


@dataclass(frozen=True, slots=True)
class CachePeek:
    """What a request would reuse if admitted now (`PrefixCache.peek`)."""

    hit_tokens: int  # prompt tokens it would reuse physically
    breakpoint_tokens: int = 0  # the longest explicit breakpoint that hit covers


class TokenSource(Protocol):
    """The token ids of a request (prompt, then output) as the cache reads them."""

    @property
    def num_tokens(self) -> int: ...

    @property
    def num_prompt_tokens(self) -> int: ...

    @property
    def reuse_limit(self) -> int:
        """The most leading tokens a match may reuse: `num_tokens - 1` for a request that
        samples next (its last known token is always computed), more for one that does
        not (a prewarm)."""
        ...

    def tokens_slice(self, start: int, stop: int) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class PromptTokens:
    """A bare prompt as a `TokenSource` (a request not admitted: no output yet)."""

    token_ids: list[int]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def reuse_limit(self) -> int:
        """As a request that samples next: its last token is always computed."""
        return len(self.token_ids) - 1

    def tokens_slice(self, start: int, stop: int) -> list[int]:
        return self.token_ids[start:stop]


@dataclass(slots=True, eq=False)
class CacheHandle:
    """One request's cache state. `seed` is None when the request is not cached."""

    settings: CacheSettings
    seed: BlockHash | None
    first_reason: MatchReason  # why the request is (not) cached, until it is admitted
    block_hashes: list[BlockHash] = field(default_factory=list)  # full blocks hashed so far
    num_registered_blocks: int = 0  # leading blocks of the block table already indexed
    hit_tokens: int | None = None  # prompt tokens reused physically, fixed at first admission
    write_tokens: int = 0  # prompt tokens this request added to the cache (physically)
    admission: CacheMatch | None = None  # the first admission's match
    waited_steps: int = 0  # steps spent waiting for a prefix another request computed
    host_tokens: int = 0  # of hit_tokens, those loaded from the host tier
    disk_tokens: int = 0  # of hit_tokens, those loaded from the disk tier
    wanted: list[BlockHash] = field(default_factory=list)  # lower blocks asked to fetch
    # (the request waits while they are read, once)
    partial_write_tokens: int = 0  # tokens of partial blocks this request cached
    breakpoints_done: int = 0  # leading `settings.breakpoints` already written
    breakpoint_end: int = 0  # longest breakpoint prefix this request cached (or refreshed)

    @property
    def reason(self) -> MatchReason:
        """The first admission's reason (or why the request is not cached at all)."""
        return self.admission.reason if self.admission is not None else self.first_reason

    @property
    def matched_tokens(self) -> int:
        return self.admission.matched_tokens if self.admission is not None else 0
