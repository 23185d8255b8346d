"""Turn the engine's growing text into safe-to-send deltas, and format Server-Sent Events."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from promptcache.engine.outputs import RequestOutput
from promptcache.text.tools import CallDelta, ToolStream


@dataclass(slots=True)
class TextDeltas:
    """Sends only text that can no longer change.

    Held back: a trailing U+FFFD (a multi-byte character still being decoded) and a tail
    that could be the start of a stop string (the engine cuts the text before a stop).
    """

    stop: tuple[str, ...]
    sent: int = 0

    def delta(self, text: str, finished: bool) -> str:
        end = len(text) if finished else self._stable_end(text)
        if end <= self.sent:
            return ""
        out = text[self.sent : end]
        self.sent = end
        return out

    def _stable_end(self, text: str) -> int:
        end = len(text)
        while end > self.sent and text[end - 1] == "\ufffd":
            end -= 1
        for s in self.stop:
            for k in range(min(len(s) - 1, end - self.sent), 0, -1):
                if text[end - k : end] == s[:k]:
                    end -= k
                    break
        return end


def output_pieces(
    deltas: TextDeltas, reader: ToolStream | None, out: RequestOutput
) -> list[CallDelta]:
    """What `out` adds to a stream that is safe to send: its new text as one content piece
    without tools (`reader` None), else the content and call pieces `reader` finds in it."""
    text = deltas.delta(out.text, out.finished)
    if reader is None:
        return [CallDelta(content=text)] if text else []
    return reader.feed(out.text[: deltas.sent], out.finished)


@dataclass(frozen=True, slots=True)
class StreamUsage:
    """Where a Chat or Completions stream reports usage: `include_usage` adds a last chunk
    with it; vLLM's `continuous_usage_stats` (with `include_usage`) puts the usage so far on
    every chunk too."""

    last: bool = False
    every: bool = False

    @classmethod
    def of(cls, options: Any) -> StreamUsage:
        if options is None:
            return cls()
        last = bool(options.include_usage)
        return cls(last, last and bool(options.continuous_usage_stats))

    def extra(self, usage: dict[str, Any] | None) -> dict[str, Any]:
        """The `usage` member of a content chunk (absent unless `include_usage`)."""
        if not self.last:
            return {}
        return {"usage": usage if self.every else None}


def sse(data: dict[str, Any], event: str | None = None) -> str:
    """One Server-Sent Event; `event:` names the Responses API event type."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"
