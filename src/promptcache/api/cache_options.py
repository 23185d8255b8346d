"""OpenAI's prompt-caching fields -> the engine's cache settings.

    prompt_cache_retention        in_memory | 24h (older models; deprecated upstream)
    prompt_cache_options.ttl      30m | 12h: the minimum lifetime of what the request writes
    prompt_cache_options.mode     implicit (default) | explicit
    prompt_cache_breakpoint       on a content part: the prompt up to the end of that part
                                  is a reusable prefix, cached to the token (its own `ttl`,
                                  else the request's)

Setting both `prompt_cache_options.ttl` and `prompt_cache_retention` is refused, as OpenAI
does. In implicit mode the request's latest 3 breakpoints are written (the automatic entry
is the fourth); in explicit mode its latest 4, and nothing without any. Earlier ones are
dropped, not refused, as upstream documents ("writes up to the latest ...").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from promptcache.api.errors import invalid
from promptcache.api.protocol import PromptCacheBreakpoint, PromptCacheOptions
from promptcache.cache.settings import Breakpoint, CacheMode, CacheSettings, Retention
from promptcache.text.chat import MessageSpan

WRITTEN = {CacheMode.IMPLICIT: 3, CacheMode.EXPLICIT: 4}  # breakpoints written per request


@dataclass(frozen=True, slots=True)
class Mark:
    """A `prompt_cache_breakpoint` on part `part` of rendered message `message`."""

    message: int
    part: int
    mark: PromptCacheBreakpoint


def marks_of(messages: Iterable[object], offset: int = 0) -> list[Mark]:
    """The breakpoints on the content parts of API messages (each with a `content` that
    is a string or a list of parts), numbered from rendered message `offset`."""
    out = []
    for i, message in enumerate(messages):
        content = getattr(message, "content", None)
        if isinstance(content, list):
            for j, part in enumerate(content):
                bp = getattr(part, "prompt_cache_breakpoint", None)
                if bp is not None:
                    out.append(Mark(offset + i, j, bp))
    return out


def openai_cache_settings(
    tenant: str,
    key: str | None,
    retention: str | None,
    options: PromptCacheOptions | None,
    marks: list[Mark],
    spans: tuple[MessageSpan, ...],
) -> CacheSettings:
    """The request's cache settings; raises a 400 `APIError` for a refused combination."""
    if options is not None and options.ttl is not None and retention is not None:
        raise invalid(
            "prompt_cache_options.ttl and prompt_cache_retention cannot both be set: "
            "prompt_cache_retention is deprecated, use prompt_cache_options.ttl",
            "prompt_cache_retention",
        )
    if options is not None:
        base = Retention(options.ttl or "30m")
        mode = CacheMode(options.mode or "implicit")
    else:
        base = Retention(retention) if retention else Retention.IN_MEMORY
        mode = CacheMode.IMPLICIT
    return CacheSettings(
        tenant=tenant,
        retention=base,
        prompt_cache_key=key,
        mode=mode,
        breakpoints=tuple(place_breakpoints(_ttls(marks, base), spans)[-WRITTEN[mode] :]),
    )


def _ttls(marks: list[Mark], base: Retention) -> list[tuple[int, int, Retention]]:
    return [(m.message, m.part, Retention(m.mark.ttl) if m.mark.ttl else base) for m in marks]


def place_breakpoints(
    marks: Iterable[tuple[int, int, Retention]], spans: tuple[MessageSpan, ...]
) -> list[Breakpoint]:
    """Breakpoints at the ends of the marked content parts, `(message, part, retention)`
    each, in prompt order: one per position (with the longest retention marked there);
    a part the template did not reproduce verbatim has no exact end and is skipped."""
    found: dict[int, Retention] = {}
    for message, part, ttl in marks:
        span = spans[message] if message < len(spans) else None
        if span is None or part >= len(span.part_ends) or span.part_ends[part] <= 0:
            continue
        position = span.part_ends[part]
        found[position] = found.get(position, ttl).longest(ttl)
    return [Breakpoint(p, found[p]) for p in sorted(found)]
