"""What the token-counting endpoints add beside the count (an extension): how much of the
prompt the tenant's prefix cache would serve right now.

    "promptcache": {"reused_tokens": R, "cached_tokens": C}

`reused_tokens` is the physical reuse a request of this prompt would get if sent now (the
`reused_tokens` of its usage), `cached_tokens` what its usage would report under the usage
rules. The engine peeks: no block is held, no retention refreshed, no query counted. The
key is absent where the engine cannot tell (a vLLM worker behind the router, Ray Serve).
"""

from __future__ import annotations

from typing import Any

from promptcache.api.context import ServerContext
from promptcache.api.errors import APIError
from promptcache.cache.settings import CacheSettings
from promptcache.engine.errors import EngineDead
from promptcache.engine.request import GenerationRequest

EXTENSION = "promptcache"


async def reuse_extension(
    ctx: ServerContext, token_ids: list[int], cache: CacheSettings, endpoint: str
) -> dict[str, Any]:
    """`{"promptcache": {...}}` for a prompt of `token_ids` with `cache` settings, or `{}`."""
    request = GenerationRequest(token_ids=token_ids, cache=cache, endpoint=endpoint)
    try:
        reuse = await ctx.engine.peek(request)
    except EngineDead as exc:
        raise APIError(500, str(exc), "server_error") from exc
    if reuse is None:
        return {}
    return {EXTENSION: {"reused_tokens": reuse.reused_tokens, "cached_tokens": reuse.cached_tokens}}
