"""The token ids of recent answers, so that an answer sent back as history renders to the
tokens the model produced (`text.chat.render_chat`'s `replays`).

A model may write a text in other tokens than the tokenizer would encode it in (grammar-
constrained tool calls do, character by character); re-encoding the history would then
miss the cached K/V of the previous answer. An answer is kept when it ended on an
end-of-sequence token and its ids decode to exactly its text, keyed by tenant and text
(a tenant never sees another's), least recently used dropped past `capacity`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from promptcache.engine.outputs import RequestOutput


class Replays:
    def __init__(self, tokenizer: Any, capacity: int) -> None:
        self._tokenizer = tokenizer
        self._capacity = capacity
        self._ids: OrderedDict[tuple[str, str], tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, tenant: str, out: RequestOutput) -> None:
        """Keep a finished answer's ids, if they replay its text exactly."""
        ids = out.token_ids
        if self._capacity <= 0 or out.finish_reason != "stop" or out.stop_sequence or not ids:
            return
        content = ids[:-1]  # the end-of-sequence token the template writes itself
        if not out.text or self._tokenizer.decode(content) != out.text:
            return
        with self._lock:
            self._ids[(tenant, out.text)] = tuple(content)
            self._ids.move_to_end((tenant, out.text))
            while len(self._ids) > self._capacity:
                self._ids.popitem(last=False)

    def lookup(self, tenant: str, text: str) -> Sequence[int] | None:
        with self._lock:
            return self._ids.get((tenant, text))

    def __len__(self) -> int:
        return len(self._ids)
