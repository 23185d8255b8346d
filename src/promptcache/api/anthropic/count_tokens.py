"""`POST /v1/messages/count_tokens`: the input tokens of a Messages request, counted
without running it.

The request is rendered exactly as `POST /v1/messages` renders it (tools, the output
schema, system, then messages), so the count is that request's whole prompt: its usage's
`input_tokens` plus `cache_creation_input_tokens` plus `cache_read_input_tokens`
(Anthropic's usage splits the prompt three ways; the count, as Anthropic's, does not).
Fields as the SDK's `MessageCountTokensParams`. The reply carries the cache's answer
beside the count, with the request's `cache_control` breakpoints considered
(api/counting.py).
"""

from __future__ import annotations

from typing import Any

from promptcache.api.anthropic.messages import render_messages
from promptcache.api.anthropic.protocol import CountTokensRequest
from promptcache.api.auth import Caller
from promptcache.api.context import ServerContext
from promptcache.api.counting import reuse_extension
from promptcache.api.support import COUNT_TOKENS_RULES, refuse_unsupported

ENDPOINT = "messages.count_tokens"


async def count_tokens(
    req: CountTokensRequest, ctx: ServerContext, caller: Caller
) -> dict[str, Any]:
    ctx.check_model(req.model)
    refuse_unsupported(req, COUNT_TOKENS_RULES)
    prompt = await render_messages(req, ctx, caller.tenant)
    token_ids = prompt.rendered.token_ids
    extension = await reuse_extension(ctx, token_ids, prompt.cache, ENDPOINT)
    return {"input_tokens": len(token_ids), **extension}
