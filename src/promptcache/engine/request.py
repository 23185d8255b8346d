"""The protocol-neutral request: what every API adapter (Chat Completions, Responses, and
any later API) builds and the engine runs.

Token ids, sampling, the cache settings (tenant, retention, `prompt_cache_key`,
breakpoints), the token positions where each rendered message ends, and what the output
must look like (tool calls, a JSON schema). It travels from
the HTTP handler through an `EngineClient` to the engine, whose sequence keeps the cache
settings in its cache handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from promptcache.cache.settings import CacheSettings
from promptcache.engine.errors import RequestError
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.sampling_params import SamplingParams
from promptcache.text.chat import MessageSpan


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation request, independent of the API that received it.

    Attributes:
        token_ids: the rendered prompt.
        params: sampling parameters.
        cache: the request's cache settings.
        messages: where each rendered message (and content part) ends in `token_ids`;
            empty for a raw prompt.
        request_id: None lets the engine client assign one.
        endpoint: the API that built it (e.g. "chat.completions"), for metrics and books.
        api_key_id: a digest naming the caller's API key (never the key), for the books.
        output: the constraint on the output (free text by default).
        choice: which of the API request's n choices this is (`engine.choices`); the
            ledger bills the prompt on choice 0 only.
        prefill_only: a prewarm: compute and cache the prompt's cacheable prefix, sample
            nothing, and finish (`stop`) with no output; `params.max_tokens` is ignored.
        resumed: the last `resumed` tokens of `token_ids` are this request's own earlier
            output (a continuation after its worker failed, `router.resume`): they count
            as output for penalties, the grammar and the text, and a seeded sampler
            resumes at their position (its generator skips their draws).
    """

    token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    cache: CacheSettings = field(default_factory=CacheSettings)
    messages: tuple[MessageSpan, ...] = ()
    request_id: str | None = None
    endpoint: str = ""
    api_key_id: str | None = None
    output: OutputSpec = field(default_factory=OutputSpec)
    choice: int = 0
    prefill_only: bool = False
    resumed: int = 0


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request the engine checked (once, in any thread) and will accept as it is."""

    request: GenerationRequest
    request_id: str
    max_tokens: int  # new tokens at most: the request's max_tokens or what the context allows
    grammar: Any = None  # the output's compiled grammar (an `xgr.CompiledGrammar`), if any


def check_request(
    token_ids: list[int],
    p: SamplingParams,
    max_model_len: int,
    vocab: int,
    prefill_only: bool = False,
) -> int:
    """Raise `RequestError` if the request cannot run; else its max new tokens (0 for a
    prefill-only request, whose prompt may fill the whole context)."""
    if not token_ids:
        raise RequestError("the prompt is empty")
    if min(token_ids) < 0 or max(token_ids) >= vocab:
        raise RequestError(f"prompt token ids must be in [0, {vocab})")
    if any(t >= vocab for t, _ in p.logit_bias):
        raise RequestError(f"logit_bias token ids must be in [0, {vocab})", param="logit_bias")
    if prefill_only:
        return _check_prefill(token_ids, p, max_model_len)
    room = max_model_len - len(token_ids)
    if room < 1:
        raise RequestError(
            f"this model's maximum context length is {max_model_len} tokens, but "
            f"the prompt has {len(token_ids)} tokens, leaving no room for a reply",
            "context_length_exceeded",
        )
    if p.max_tokens is not None and p.max_tokens > room:
        raise RequestError(
            f"this model's maximum context length is {max_model_len} tokens; the "
            f"prompt has {len(token_ids)} tokens and {p.max_tokens} more were requested "
            f"(at most {room} fit)",
            "context_length_exceeded",
        )
    return p.max_tokens if p.max_tokens is not None else room


def _check_prefill(token_ids: list[int], p: SamplingParams, max_model_len: int) -> int:
    if p.prompt_logprobs is not None:  # they need every position computed, and reads off
        raise RequestError("a prewarm computes no prompt logprobs", param="prompt_logprobs")
    if len(token_ids) > max_model_len:
        raise RequestError(
            f"this model's maximum context length is {max_model_len} tokens, but "
            f"the prompt has {len(token_ids)} tokens",
            "context_length_exceeded",
        )
    return 0
