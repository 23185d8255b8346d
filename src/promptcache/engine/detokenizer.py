"""Incremental text for a request's output tokens, and stop-string detection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Detokenizer:
    """Decodes a growing list of output tokens; finds the first stop string in the text."""

    tokenizer: Any
    stop: tuple[str, ...]
    text: str = ""
    _checked_upto: int = field(default=0)

    def update(self, token_ids: list[int]) -> bool:
        """Re-decode after new tokens; True when a stop string appeared (text cut before it)."""
        self.text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        if not self.stop:
            return False
        longest = max(len(s) for s in self.stop)
        start = max(0, self._checked_upto - longest + 1)
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        self._checked_upto = len(self.text)
        if hits:
            self.text = self.text[: min(hits)]
            return True
        return False
