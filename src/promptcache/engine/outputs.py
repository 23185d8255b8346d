"""What the engine reports for a request: text so far, tokens, finish reason, usage, timing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    cached_tokens: int  # prompt tokens whose K/V was reused from the prefix cache
    cache_write_tokens: int  # prompt tokens this request newly added to the cache
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class RequestOutput:
    """A snapshot of one request after a step (`finished` tells whether it is the last)."""

    request_id: str
    text: str
    token_ids: list[int]
    new_token_ids: list[int]
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort" once finished
    usage: Usage
    ttft_s: float | None
    total_s: float | None

    def to_dict(self) -> dict[str, Any]:
        """The `generate --json` shape."""
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "usage": asdict(self.usage),
            "ttft_s": self.ttft_s,
            "total_s": self.total_s,
        }
