"""What the engine reports for a request: text so far, tokens, finish reason, usage, timing,
and (on the final output) what the prefix cache found for it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from promptcache.cache.handle import CacheHandle


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of a request. `cached_tokens` and `cache_write_tokens` follow the usage
    rules (OpenAI's by default); `reused_tokens` and `written_tokens` are physical."""

    prompt_tokens: int
    cached_tokens: int  # reported: prompt tokens served from the prefix cache
    cache_write_tokens: int  # reported: prompt tokens this request added to the cache
    completion_tokens: int
    reused_tokens: int = 0  # physical: prompt tokens whose K/V was reused, not computed
    written_tokens: int = 0  # physical: prompt tokens of blocks this request newly cached


@dataclass(frozen=True, slots=True)
class PrefixReuse:
    """What a prompt would reuse from the prefix cache if it were sent now (a peek):
    `reused_tokens` physical, `cached_tokens` as usage would report it."""

    reused_tokens: int
    cached_tokens: int


@dataclass(frozen=True, slots=True)
class CacheReport:
    """The cache's view of one request: its settings and the first admission's match."""

    tenant: str | None
    retention: str  # "in_memory" | "24h"
    prompt_cache_key: str | None
    matched_tokens: int  # longest cached run found (reuse stops short of the last token)
    reason: str  # a `promptcache.cache.handle.MatchReason` value
    waited_steps: int  # steps waited for a prefix another request was computing
    evicted_at: float | None = None  # the match's next block was evicted then (unix time)
    evicted_retention: str | None = None  # ... and had this retention
    evicted_expired: bool = False  # ... because its retention ran out (else for room)
    reused_from_host: int = 0  # of the reused prompt tokens, those loaded from the host tier
    reused_from_disk: int = 0  # ... and those loaded from the disk tier
    mode: str = "implicit"  # "implicit" | "explicit" (only breakpoints cached and matched)
    breakpoints: int = 0  # explicit breakpoints the request carried
    breakpoint_tokens: int = 0  # the longest breakpoint prefix the reuse held (0: none)

    @classmethod
    def of(cls, handle: CacheHandle) -> CacheReport:
        s = handle.settings
        evicted = handle.admission.evicted if handle.admission is not None else None
        return cls(
            tenant=s.tenant,
            retention=s.retention.value,
            prompt_cache_key=s.prompt_cache_key,
            matched_tokens=handle.matched_tokens,
            reason=handle.reason.value,
            waited_steps=handle.waited_steps,
            evicted_at=evicted.evicted_at if evicted else None,
            evicted_retention=evicted.retention.value if evicted else None,
            evicted_expired=evicted.expired if evicted else False,
            reused_from_host=handle.host_tokens,
            reused_from_disk=handle.disk_tokens,
            mode=s.mode.value,
            breakpoints=len(s.breakpoints),
            breakpoint_tokens=handle.admission.breakpoint_tokens if handle.admission else 0,
        )


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A token's log probability and the most likely tokens at its position, most likely
    first (as many as asked; fewer where the rest are impossible)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """A snapshot of one request after a step (`finished` tells whether it is the last).

    `token_ids` holds every output token on the final output only (empty before), so a
    step costs O(1) per request however long the output; `new_token_ids` are this step's.
    Likewise `logprobs` (final) and `new_logprobs` (this step's), where asked for;
    `prompt_logprobs` (on the first output with a token, and the final) has one per prompt
    token after the first.
    """

    request_id: str
    text: str
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" once finished
    usage: Usage
    ttft_s: float | None
    total_s: float | None
    token_ids: list[int] = field(default_factory=list)
    cache: CacheReport | None = None  # on the final output
    worker: str | None = None  # the worker that ran it (set by the router)
    stop_sequence: str | None = None  # the stop string that ended it, if one did
    new_logprobs: list[TokenLogprob] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    queue_s: float | None = None  # arrival -> admission (the scheduler's first placement)

    def to_dict(self) -> dict[str, Any]:
        """The `generate --json` shape."""
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "usage": asdict(self.usage),
            "cache": asdict(self.cache) if self.cache is not None else None,
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
        }
