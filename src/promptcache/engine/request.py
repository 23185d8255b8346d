"""The protocol-neutral request: what every API adapter (Chat Completions, Responses, and
any later API) builds and the engine runs.

Token ids, sampling, the cache settings (tenant, retention, `prompt_cache_key`,
breakpoints) and the token positions where each rendered message ends. It travels from
the HTTP handler through an `EngineClient` to the engine, whose sequence keeps the cache
settings in its cache handle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptcache.cache.settings import CacheSettings
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.chat import MessageSpan


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
    """

    token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    cache: CacheSettings = field(default_factory=CacheSettings)
    messages: tuple[MessageSpan, ...] = ()
    request_id: str | None = None
    endpoint: str = ""
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """A request the engine checked (once, in any thread) and will accept as it is."""

    request: GenerationRequest
    request_id: str
    max_tokens: int  # new tokens at most: the request's max_tokens or what the context allows
