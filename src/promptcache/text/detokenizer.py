"""Incremental text for a request's output tokens, and stop-string detection.

Uses the `tokenizers` library's `DecodeStream`, which turns one token at a time into text
and holds back bytes of a multi-byte character until it is complete, so each step costs
O(1) instead of re-decoding the whole output. Tokenizers without a Rust backend fall back
to decoding the whole output each step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenizers.decoders import DecodeStream


@dataclass(slots=True)
class Detokenizer:
    """Text of the output so far, cut before the first stop string."""

    tokenizer: Any
    stop: tuple[str, ...]
    text: str = ""
    matched: str | None = None  # the stop string that ended the text, once one did
    _checked_upto: int = 0
    _stream: DecodeStream | None = field(default=None)
    _ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if getattr(self.tokenizer, "_tokenizer", None) is not None:
            self._stream = DecodeStream(skip_special_tokens=True)

    def update(self, token: int) -> bool:
        """Add one token; True when a stop string appeared (the text is cut before it)."""
        if self._stream is not None:
            self.text += self._stream.step(self.tokenizer._tokenizer, token) or ""
        else:
            self._ids.append(token)
            self.text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        return self._find_stop()

    def _find_stop(self) -> bool:
        if not self.stop:
            return False
        longest = max(len(s) for s in self.stop)
        start = max(0, self._checked_upto - longest + 1)
        hits = [(i, s) for s, i in ((s, self.text.find(s, start)) for s in self.stop) if i >= 0]
        self._checked_upto = len(self.text)
        if hits:
            at, self.matched = min(hits, key=lambda hit: hit[0])
            self.text = self.text[:at]
            return True
        return False
