"""OpenAI's prompt-caching granularity: which prompts are cached and how much of a match counts.

With the defaults (min_prompt_tokens 1024, increment 128) a hit is 0 or 1024, 1152, 1280 …
and never covers the prompt's last token, whose logits start decoding (docs/caching.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool
    min_prompt_tokens: int
    increment: int

    def cacheable(self, prompt_len: int) -> bool:
        """Prompts shorter than the minimum are neither looked up nor written."""
        return self.enabled and prompt_len >= self.min_prompt_tokens

    def hit_tokens(self, matched_tokens: int, prompt_len: int) -> int:
        """Reusable tokens for a match of `matched_tokens`: rounded down to the increment,
        at most `prompt_len - 1`, and 0 below the minimum."""
        usable = min(matched_tokens, prompt_len - 1)
        hit = usable // self.increment * self.increment
        return hit if hit >= self.min_prompt_tokens else 0
