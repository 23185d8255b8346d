"""Logprobs in OpenAI's shapes: Chat's `choices[].logprobs.content`, Responses'
`output_text.logprobs` and Completions' `logprobs` (tokens, token_logprobs, top_logprobs,
text_offset). Each value is of the distribution the token was sampled from
(engine/logits.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptcache.engine.outputs import TokenLogprob
from promptcache.text.token_bytes import TokenBytes

FLOOR = -9999.0  # OpenAI's stand-in for an impossible token's logprob (JSON has no -inf)


def _value(logprob: float) -> float:
    return logprob if math.isfinite(logprob) else FLOOR


def _token(tb: TokenBytes, token_id: int, logprob: float) -> dict[str, Any]:
    return {
        "token": tb.text_of(token_id),
        "logprob": _value(logprob),
        "bytes": list(tb.bytes_of(token_id)),
    }


def content_entries(items: Sequence[TokenLogprob], tb: TokenBytes) -> list[dict[str, Any]]:
    """Chat's `logprobs.content` (and Responses' `logprobs`): one entry per token."""
    return [
        {
            **_token(tb, t.token_id, t.logprob),
            "top_logprobs": [_token(tb, i, lp) for i, lp in t.top],
        }
        for t in items
    ]


def chat_logprobs(items: Sequence[TokenLogprob], tb: TokenBytes) -> dict[str, Any]:
    return {"content": content_entries(items, tb), "refusal": None}


def completion_logprobs(
    items: Sequence[tuple[int, TokenLogprob | None]], tb: TokenBytes, start: int = 0
) -> dict[str, Any]:
    """Completions' legacy shape from (token id, its logprob) pairs; a None logprob (the
    first prompt token, which has none) is reported as null. `text_offset` counts
    characters from `start`."""
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    at = start
    for token_id, item in items:
        text = tb.text_of(token_id)
        tokens.append(text)
        values.append(None if item is None else _value(item.logprob))
        tops.append(None if item is None else {tb.text_of(i): _value(lp) for i, lp in item.top})
        offsets.append(at)
        at += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
