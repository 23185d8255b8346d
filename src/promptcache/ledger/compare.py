"""Comparing a request with a named earlier one: the providers' cache diagnostics.

OpenAI's `prompt_cache_options.comparison_response_id` and Anthropic's
`diagnostics.previous_message_id` name an earlier request of the same tenant; the server
says whether this request reused that one's cached prefix, and if not, what changed first.
`Fingerprints` keeps what is needed of recent requests (per server, least recent dropped
first), keyed by tenant and the id the client saw, so another tenant's id is not found,
exactly as a missing one. `compare` answers in our own vocabulary (`Change`); the API
adapters map it onto each provider's reasons.

What the earlier request left reusable is its prompt and output (the output's K/V is
cached too, so an agent's next turn reuses it), in whole blocks in implicit mode, or up to
its latest explicit breakpoint in explicit mode. When the two agree on all of that (this
prompt starts with it, or is itself a prefix of it), a reuse of every whole block of the
shared part is a hit. Otherwise the first differing token, `k`,
is classified by where it lies: in the tools (rendered first), in the answer's format
(rendered after them), in the system message, or in the messages; the first two are told
apart by which digest changed, as both come before the first message. A change of model or
of `prompt_cache_key` is reported where it is the cause (the key only steers routing: it
is the cause when the content was the same but the request ran on another worker).
"""

from __future__ import annotations

import enum
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from promptcache.ledger.diagnosis import common_prefix, preamble_change, span_at
from promptcache.text.chat import MessageSpan


class Change(enum.Enum):
    """What the comparison found, first that applies."""

    NOT_FOUND = "not_found"  # no such earlier request of this tenant is remembered
    HIT = "hit"  # extends the earlier request, and reused all it left
    MODEL = "model_changed"
    KEY = "prompt_cache_key_changed"  # same content, another key, ran on another worker
    TOOLS = "tools_changed"
    FORMAT = "format_changed"  # first difference in the answer's format, tools the same
    SYSTEM = "system_changed"  # first difference in the system message
    MESSAGES = "messages_changed"  # first difference in a message after it
    NOT_REUSED = "not_reused"  # extends it, but less was reused (evicted, expired, moved)


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What a finished request leaves for comparisons."""

    model: str
    prompt_cache_key: str | None
    tools: str  # the tools' digest (`OutputSpec.tools_digest`)
    format: str  # the answer format's digest (`OutputSpec.format_digest`)
    tokens: array[int]  # prompt, then output
    prompt_len: int
    messages: tuple[MessageSpan, ...]
    reusable: int  # of `tokens`, how many a later request could reuse from the cache
    worker: str | None = None


def reusable_tokens(
    prompt_len: int, output_len: int, block_size: int, explicit: bool, breakpoints: list[int]
) -> int:
    """What a finished request leaves reusable: whole blocks of its prompt and output short
    of the last sampled token (whose K/V is never computed) in implicit mode, or its latest
    breakpoint in explicit mode."""
    last = max(breakpoints, default=0)
    if explicit:
        return last
    return max((prompt_len + output_len - 1) // block_size * block_size, last)


@dataclass(frozen=True, slots=True)
class Comparison:
    change: Change
    diverged_at: int | None = None  # first token where the prompts differ
    comparison_reusable: int = 0  # tokens of the earlier request's reusable prefix shared
    missed_tokens: int = 0  # tokens of this prompt after the divergence (computed again)
    would_have_read: int = 0  # tokens of the earlier reusable prefix that were not read
    message_index: int | None = None
    message_role: str | None = None


class Fingerprints:
    """Recent requests' fingerprints, by (tenant, id); at most `capacity` (0: none)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str | None, str], Fingerprint] = OrderedDict()

    def put(self, tenant: str | None, request_id: str, fp: Fingerprint) -> None:
        if self.capacity <= 0:
            return
        self._items[(tenant, request_id)] = fp
        self._items.move_to_end((tenant, request_id))
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def get(self, tenant: str | None, request_id: str) -> Fingerprint | None:
        return self._items.get((tenant, request_id))


def compare(
    earlier: Fingerprint | None, now: Fingerprint, reused: int, block_size: int
) -> Comparison:
    """This request (`now`, which reused `reused` prompt tokens) against `earlier`."""
    if earlier is None:
        return Comparison(Change.NOT_FOUND)
    k = common_prefix(earlier.tokens, now.tokens[: now.prompt_len])
    shared = min(k, earlier.reusable)
    if earlier.model != now.model:
        return _changed(Change.MODEL, earlier, now, 0, reused, None)
    if k >= min(earlier.reusable, now.prompt_len):  # no divergence in what it left
        expected = min(earlier.reusable, now.prompt_len - 1) // block_size * block_size
        if reused >= expected:
            return Comparison(Change.HIT, comparison_reusable=shared)
        moved = earlier.worker is not None and now.worker not in (None, earlier.worker)
        keyed = moved and earlier.prompt_cache_key != now.prompt_cache_key
        return _changed(Change.KEY if keyed else Change.NOT_REUSED, earlier, now, k, reused, None)
    span = span_at(now.messages, k)
    digests = (earlier.tools, earlier.format), (now.tools, now.format)
    preamble = preamble_change(now.messages, k, *digests)
    if preamble is not None:
        return _changed(Change(preamble), earlier, now, k, reused, span)
    change = Change.SYSTEM if span is not None and span.role == "system" else Change.MESSAGES
    return _changed(change, earlier, now, k, reused, span)


def _changed(
    change: Change,
    earlier: Fingerprint,
    now: Fingerprint,
    k: int,
    reused: int,
    span: MessageSpan | None,
) -> Comparison:
    shared = min(k, earlier.reusable)
    return Comparison(
        change,
        diverged_at=k if change not in (Change.NOT_REUSED, Change.KEY) else None,
        comparison_reusable=shared,
        missed_tokens=max(0, now.prompt_len - max(k, reused)),
        would_have_read=max(0, min(earlier.reusable, now.prompt_len - 1) - max(shared, reused)),
        message_index=span.index if span is not None else None,
        message_role=span.role if span is not None else None,
    )
