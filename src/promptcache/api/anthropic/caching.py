"""Anthropic's `cache_control` -> the engine's cache settings, and its cache usage fields.

    cache_control on a system or message text block   a breakpoint at the end of the block
    cache_control at the top level                     automatic caching: a breakpoint at
                                                       the end of the last block
    ttl "5m" (default) | "1h"                          idle lifetime; a hit refreshes it

    cache_control on a tool                            a breakpoint at the end of the tools

Prefix order is Anthropic's: tools, system (the output schema first), then messages. A
block's position is where the renderer put it (`tools.Positions`): a tool result is its
own rendered turn, and a block of an assistant turn with calls ends with the whole turn.
At most 4 breakpoints per request (the automatic one counts), and `1h` ones must come
before `5m` ones; both are refused with a 400 otherwise, as Anthropic does. Nothing is
cached without a breakpoint (explicit mode); a prefix shorter than `min_breakpoint_tokens`
is not cached.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from promptcache.api.anthropic.protocol import CacheControl, CustomTool, MessagesPrompt
from promptcache.api.anthropic.tools import Positions
from promptcache.api.cache_options import place_breakpoints
from promptcache.api.errors import invalid
from promptcache.cache.settings import Breakpoint, CacheMode, CacheSettings, Retention
from promptcache.engine.outputs import Usage
from promptcache.text.chat import MessageSpan

MAX_BREAKPOINTS = 4


TOOLS = -1  # a Mark's message for the tools block


@dataclass(frozen=True, slots=True)
class Mark:
    message: int  # index among the rendered messages (the system prompt first), or TOOLS
    part: int  # content part index in that message
    ttl: Retention


def _ttl(cc: CacheControl) -> Retention:
    return Retention.ONE_HOUR if cc.ttl == "1h" else Retention.FIVE_MINUTES


def _blocks(content: str | list[Any] | None) -> list[Any]:
    return content if isinstance(content, list) else []


def marks_of(req: MessagesPrompt, tools: list[CustomTool], where: Positions) -> list[Mark]:
    """The request's breakpoints in prompt order; raises a 400 for too many or for a `1h`
    after a `5m`."""
    system = [req.system] if req.system else []
    contents = [*system, *(m.content for m in req.messages)]
    marks = [Mark(TOOLS, 0, _ttl(t.cache_control)) for t in tools if t.cache_control is not None]
    marks += [
        Mark(*where[(i, j)], _ttl(block.cache_control))
        for i, content in enumerate(contents)
        for j, block in enumerate(_blocks(content))
        if block.cache_control is not None
    ]
    if req.cache_control is not None:
        last = contents[-1]
        if isinstance(last, list) and not last:
            raise invalid(
                "cache_control: the last message has no content block to mark", "cache_control"
            )
        block = len(last) - 1 if isinstance(last, list) else 0
        marks.append(Mark(*where[(len(contents) - 1, block)], _ttl(req.cache_control)))
    if len(marks) > MAX_BREAKPOINTS:
        raise invalid(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(marks)}.",
            "cache_control",
        )
    for before, after in itertools.pairwise(marks):
        if before.ttl is Retention.FIVE_MINUTES and after.ttl is Retention.ONE_HOUR:
            raise invalid(
                "a cache_control with ttl '1h' must not come after one with ttl '5m': "
                "longer-lived cache entries must come first in the prompt",
                "cache_control",
            )
    return marks


def anthropic_cache_settings(
    tenant: str, marks: list[Mark], spans: tuple[MessageSpan, ...], tools_end: int | None
) -> CacheSettings:
    """Explicit mode with the marks' exact token positions (where the template kept the
    block's text; the tools' end where the renderer put them first)."""
    found = place_breakpoints([(m.message, m.part, m.ttl) for m in marks if m.message >= 0], spans)
    on_tools = [m.ttl for m in marks if m.message == TOOLS]
    if on_tools and tools_end:
        longest = on_tools[0]
        for ttl in on_tools[1:]:
            longest = longest.longest(ttl)
        found.insert(0, Breakpoint(tools_end, longest))
    breakpoints = tuple(found)
    return CacheSettings(
        tenant=tenant,
        retention=Retention.FIVE_MINUTES,
        mode=CacheMode.EXPLICIT,
        breakpoints=breakpoints,
    )


def anthropic_usage(u: Usage, settings: CacheSettings) -> dict[str, Any]:
    """Anthropic's usage object: uncached input, cache reads, cache writes split by ttl."""
    cached, written = u.cached_tokens, u.cache_write_tokens
    long = settings.kept_long(cached, cached + written)
    return {
        "input_tokens": u.prompt_tokens - cached - written,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "cache_creation": {
            "ephemeral_5m_input_tokens": written - long,
            "ephemeral_1h_input_tokens": long,
        },
        "output_tokens": u.completion_tokens,
        "inference_geo": None,
        "output_tokens_details": None,
        "server_tool_use": None,
        "service_tier": "standard",
    }
