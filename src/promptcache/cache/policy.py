"""What is reused and what is reported.

Reuse is physical and maximal: every request reuses the longest run of cached full blocks
its prompt starts with, whatever the prompt's length, short of the prompt's last token
(whose logits start decoding). Reporting follows the usage rules: under `openai` (the
default) `cached_tokens` is what OpenAI's API would report for the same reuse — 0 below
`min_prompt_tokens`, else the reused count rounded down to `increment` (0 or 1024, 1152,
1280 …); under `exact` it is the physical reuse. A hit that ends at an explicit breakpoint
is reported to the token under either rule, and so is a breakpoint's write. See
docs/features/prompt-caching.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class UsageRules(enum.Enum):
    OPENAI = "openai"  # report as OpenAI's API would: minimum and increment
    EXACT = "exact"  # report what was physically reused and written


@dataclass(frozen=True, slots=True)
class CachePolicy:
    enabled: bool
    min_prompt_tokens: int
    increment: int
    rules: UsageRules = UsageRules.OPENAI
    min_breakpoint_tokens: int = 1024  # shorter breakpoint prefixes are not cached

    def reported(self, prefix_tokens: int) -> int:
        """The reported size of a cached prefix of `prefix_tokens` physical tokens."""
        if self.rules is UsageRules.EXACT:
            return prefix_tokens
        rounded = prefix_tokens // self.increment * self.increment
        return rounded if rounded >= self.min_prompt_tokens else 0

    def usage(
        self, hit: int, written: int, breakpoint_hit: int, breakpoint_end: int, implicit: bool
    ) -> tuple[int, int]:
        """Reported (cached, written) tokens of a request that reused `hit` prompt tokens
        (holding an explicit breakpoint of `breakpoint_hit` tokens, or 0), cached `written`
        more in full blocks right after them (implicit mode), and cached breakpoints up to
        `breakpoint_end`."""
        cached = max(self.reported(hit), breakpoint_hit)
        after = max(cached, breakpoint_end)
        if implicit:
            after = max(after, self.reported(hit + written))
        return cached, after - cached
