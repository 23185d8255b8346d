"""vLLM workers behind the router (`--worker vllm:URL`): the request's token ids go to
vLLM's `POST /v1/completions` (streamed, with `return_token_ids` and usage), and its
chunks come back as `RequestOutput`s, so the router's handlers, books and metrics work as
with our own workers.

Tenants stay isolated on vLLM too: the router sends `cache_salt` = SHA-256 of the tenant,
which salts vLLM's prefix-cache hashes exactly as the tenant salts ours (clients cannot set
it: the router does). vLLM reports its physical reuse (`cached_tokens` with
`--enable-prompt-tokens-details`); the router reports it under the same usage rules as our
engine (`CachePolicy.reported`). vLLM does not report cache writes: 0.

Tools and output formats reach vLLM as its own `structured_outputs` parameter: the very
grammar our engine compiles (`engine.grammar.forms`: an XGrammar EBNF grammar of canonical
JSON, or the tool calls' structural tag), which vLLM's XGrammar backend compiles in turn.
So a call or a JSON answer from a vLLM worker has the same form, and replays to the same
tokens, as one from ours; the router's handlers parse it as they parse ours.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from promptcache.cache.policy import CachePolicy
from promptcache.engine.grammar.forms import grammar_source
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import RequestOutput, Usage
from promptcache.engine.request import GenerationRequest

COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
PREFIX = "vllm:"


def tenant_salt(tenant: str | None) -> str:
    return hashlib.sha256(b"promptcache-tenant/" + (tenant or "").encode()).hexdigest()


def completion_body(request: GenerationRequest, model: str, max_tokens: int) -> dict[str, Any]:
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "prompt": request.token_ids,
        "max_tokens": max_tokens,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "top_k": p.top_k or -1,  # vLLM: -1 keeps every token
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "cache_salt": tenant_salt(request.cache.tenant),
        "ignore_eos": p.ignore_eos,
    }
    if p.seed is not None:
        body["seed"] = p.seed
    if p.stop:
        body["stop"] = list(p.stop)
    if p.stop_token_ids:
        body["stop_token_ids"] = list(p.stop_token_ids)
    if request.output.constrained:
        body["structured_outputs"] = structured_outputs(request.output)
    return body


def structured_outputs(output: OutputSpec) -> dict[str, str]:
    """vLLM's `structured_outputs` for a constrained output: our grammar, by its kind
    (`grammar` or `structural_tag`). Raises `RequestError` for a schema XGrammar refuses."""
    source = grammar_source(output)
    return {source.kind.value: source.text}


async def outputs_of(
    lines: AsyncIterator[str], request_id: str, prompt_tokens: int, policy: CachePolicy
) -> AsyncIterator[RequestOutput]:
    """vLLM's server-sent events as outputs; the last (with usage) is the finished one."""
    start = time.perf_counter()
    text, tokens, reason, first = "", [], None, None
    async for line in lines:
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        for choice in chunk.get("choices") or []:
            new = [int(t) for t in choice.get("token_ids") or []]
            text += choice.get("text") or ""
            tokens += new
            reason = choice.get("finish_reason") or reason
            if new and first is None:
                first = time.perf_counter() - start
            usage = _usage(prompt_tokens, len(tokens), 0, policy)
            yield RequestOutput(request_id, text, new, False, None, usage, first, None)
        if chunk.get("usage"):
            u = chunk["usage"]
            cached = ((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
            usage = _usage(int(u["prompt_tokens"]), len(tokens), int(cached), policy)
            total = time.perf_counter() - start
            finish = "length" if reason == "length" else "stop"
            yield RequestOutput(request_id, text, [], True, finish, usage, first, total, tokens)
            return


def _usage(prompt: int, completion: int, reused: int, policy: CachePolicy) -> Usage:
    return Usage(
        prompt_tokens=prompt,
        cached_tokens=policy.reported(reused),
        cache_write_tokens=0,
        completion_tokens=completion,
        reused_tokens=reused,
        written_tokens=0,
    )
