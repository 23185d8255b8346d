"""`POST /v1/responses/input_tokens`: the input tokens of a Responses request, counted
without running it.

The request is rendered exactly as `POST /v1/responses` renders it (instructions, the
stored conversation of `previous_response_id`, input, tools, `text.format`), so the count
is the `usage.input_tokens` that request would get. Fields as OpenAI's
`InputTokenCountParams`; `model` may be omitted (the served model is counted). As
extensions, `prompt_cache_key`, `prompt_cache_retention` and `prompt_cache_options` are
taken, since they decide which worker and which cache entries the request would meet; the
reply carries the cache's answer beside the count (api/counting.py).
"""

from __future__ import annotations

from typing import Any

from promptcache.api.auth import Caller
from promptcache.api.context import ServerContext
from promptcache.api.counting import reuse_extension
from promptcache.api.errors import invalid
from promptcache.api.protocol import InputTokensRequest, ResponsesRequest
from promptcache.api.responses import render_request
from promptcache.api.support import INPUT_TOKENS_RULES, refuse_unsupported

ENDPOINT = "responses.input_tokens"


def as_responses_request(req: InputTokensRequest, model: str) -> ResponsesRequest:
    """The `POST /v1/responses` request this count stands for."""
    if req.input is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    fields = req.model_dump(by_alias=True, exclude_unset=True, exclude={"personality"})
    return ResponsesRequest.model_validate({**fields, "model": model})


async def count_input_tokens(
    req: InputTokensRequest, ctx: ServerContext, caller: Caller
) -> dict[str, Any]:
    model = req.model if req.model is not None else ctx.model_name
    ctx.check_model(model)
    refuse_unsupported(req, INPUT_TOKENS_RULES)
    prompt = await render_request(as_responses_request(req, model), ctx, caller.tenant)
    token_ids = prompt.rendered.token_ids
    extension = await reuse_extension(ctx, token_ids, prompt.cache, ENDPOINT)
    return {"object": "response.input_tokens", "input_tokens": len(token_ids), **extension}
