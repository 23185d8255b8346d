"""The providers' cache diagnostics, answered from `ledger.compare`.

OpenAI Responses: `prompt_cache_options.comparison_response_id` -> the Response's
`prompt_cache_diagnostics`:

    hit                       cache_hit
    not_found                 comparison_response_not_found
    model_changed             cache_miss, reason model_changed
    prompt_cache_key_changed  cache_miss, reason prompt_cache_key_changed
    tools_changed             cache_miss, reason tools_changed
    format_changed            cache_miss, reason text_format_changed
    system_changed            cache_miss, reason input_changed (instructions are input)
    messages_changed          cache_miss, reason input_changed
    not_reused                unavailable (evicted, expired or computed elsewhere: no reason
                              of theirs says so; our extension does)

with `cache_missed_tokens` = this prompt's tokens after the divergence (computed again) and
`comparison_reusable_tokens` = the tokens of the earlier request's reusable prefix that
this one shares. `reasoning_effort_changed`, `verbosity_changed`, `context_compacted` and
`service_tier_changed` are never produced: this server has no such settings.

Anthropic Messages: `diagnostics: {previous_message_id}` -> the Message's `diagnostics`:
null when the request extended the earlier one and reused it (no divergence), or named no
message; else `cache_miss_reason` of type `model_changed`, `system_changed`,
`tools_changed` or `messages_changed` (each with `cache_missed_input_tokens`: the earlier
request's reusable tokens that were not read), `previous_message_not_found`, or
`unavailable` (a key change or a prefix no longer cached: not their vocabulary). Our
`format_changed` is their `system_changed`: their order is tools, system, messages, and the
output schema is rendered at the system level, after the tools.

Beside each, `promptcache_diagnostics` is ours: the exact token and message where the two
prompts diverge and every count (docs/features/prompt-caching.md).
"""

from __future__ import annotations

from array import array
from typing import Any

from promptcache.api.context import ServerContext
from promptcache.cache.settings import CacheMode
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.ledger.compare import Change, Comparison, Fingerprint, compare, reusable_tokens

_OPENAI_REASON = {
    Change.MODEL: "model_changed",
    Change.KEY: "prompt_cache_key_changed",
    Change.TOOLS: "tools_changed",
    Change.FORMAT: "text_format_changed",
    Change.SYSTEM: "input_changed",
    Change.MESSAGES: "input_changed",
}
_ANTHROPIC_REASON = {
    Change.MODEL: "model_changed",
    Change.TOOLS: "tools_changed",
    Change.FORMAT: "system_changed",  # their order: tools, system (the schema), messages
    Change.SYSTEM: "system_changed",
    Change.MESSAGES: "messages_changed",
}


def fingerprint(ctx: ServerContext, request: GenerationRequest, out: RequestOutput) -> Fingerprint:
    """What `request`, finished with `out`, leaves for later comparisons."""
    prompt, output = request.token_ids, out.token_ids
    explicit = request.cache.mode is CacheMode.EXPLICIT
    shortest = ctx.rendering.min_breakpoint_tokens
    marks = [b.position for b in request.cache.breakpoints if b.position >= shortest]
    bs = ctx.rendering.block_size
    return Fingerprint(
        model=ctx.model_name,
        prompt_cache_key=request.cache.prompt_cache_key,
        tools=request.output.tools_digest(),
        format=request.output.format_digest(),
        tokens=array("l", [*prompt, *output]),
        prompt_len=len(prompt),
        messages=request.messages,
        reusable=reusable_tokens(len(prompt), len(output), bs, explicit, marks),
        worker=out.worker,
    )


def remember(
    ctx: ServerContext, tenant: str, request: GenerationRequest, out: RequestOutput
) -> Fingerprint:
    """Keep the finished request's fingerprint under the id its client saw."""
    fp = fingerprint(ctx, request, out)
    if request.request_id is not None:
        ctx.fingerprints.put(tenant, request.request_id, fp)
    return fp


def comparison(
    ctx: ServerContext, tenant: str, earlier_id: str, now: Fingerprint, out: RequestOutput
) -> Comparison:
    earlier = ctx.fingerprints.get(tenant, earlier_id)
    return compare(earlier, now, out.usage.reused_tokens, ctx.rendering.block_size)


def openai_diagnostics(c: Comparison) -> dict[str, Any]:
    """`prompt_cache_diagnostics` in OpenAI's shape."""
    if c.change is Change.NOT_FOUND:
        return {"type": "comparison_response_not_found"}
    if c.change is Change.HIT:
        return {"type": "cache_hit"}
    reason = _OPENAI_REASON.get(c.change)
    if reason is None:
        return {"type": "unavailable"}
    return {
        "type": "cache_miss",
        "reason": reason,
        "cache_missed_tokens": c.missed_tokens,
        "comparison_reusable_tokens": c.comparison_reusable,
    }


def anthropic_diagnostics(c: Comparison) -> dict[str, Any] | None:
    """`diagnostics` in Anthropic's shape (None: no divergence)."""
    if c.change is Change.HIT:
        return None
    if c.change is Change.NOT_FOUND:
        return {"cache_miss_reason": {"type": "previous_message_not_found"}}
    reason = _ANTHROPIC_REASON.get(c.change)
    if reason is None:
        return {"cache_miss_reason": {"type": "unavailable"}}
    missed = {"type": reason, "cache_missed_input_tokens": c.would_have_read}
    return {"cache_miss_reason": missed}


def extension(c: Comparison, compared_with: str, out: RequestOutput) -> dict[str, Any]:
    """`promptcache_diagnostics`: ours, beside theirs."""
    return {
        "compared_with": compared_with,
        "change": c.change.value,
        "diverged_at": c.diverged_at,
        "message_index": c.message_index,
        "message_role": c.message_role,
        "comparison_reusable_tokens": c.comparison_reusable,
        "missed_tokens": c.missed_tokens,
        "would_have_read_tokens": c.would_have_read,
        "reused_tokens": out.usage.reused_tokens,
        "cache_reason": out.cache.reason if out.cache is not None else None,
        "evicted_at": out.cache.evicted_at if out.cache is not None else None,
        "evicted_expired": out.cache.evicted_expired if out.cache is not None else False,
    }


def anthropic_fields(
    ctx: ServerContext,
    tenant: str,
    request: GenerationRequest,
    out: RequestOutput,
    previous_id: str | None,
) -> dict[str, Any]:
    """The Message's `diagnostics` (and ours beside it) for a request that supplied
    `diagnostics`; `out` is its first output or its final one (only its reuse is read)."""
    if previous_id is None:  # opted in with no earlier message to compare
        return {"diagnostics": None}
    found = comparison(ctx, tenant, previous_id, fingerprint(ctx, request, out), out)
    return {
        "diagnostics": anthropic_diagnostics(found),
        "promptcache_diagnostics": extension(found, previous_id, out),
    }
