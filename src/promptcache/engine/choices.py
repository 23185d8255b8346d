"""n > 1: one API request's n choices as n engine requests that share one prefill.

Each choice is its own `GenerationRequest` (its own sequence, blocks, grammar matcher and
ledger row), as vLLM fans out its parallel sampling. The first choice keeps the request's
id; choice j > 0 is `{id}-{j}`. With a seed, choice j samples with `seed + j`, so each is
reproducible and they differ from each other.

The prompt is computed once: the choices carry the same prompt and cache settings, so the
first one admitted claims the prompt's full blocks and the others wait a step for them
(`PrefixCache.match`), then hold them by reference. Each computes only its own last,
partial block, where its output begins (at most `block_size` tokens): the copy on write of
the shared prompt. Where the prompt cannot be shared (prefix caching off, explicit cache
mode, or Completions' `echo` with prompt logprobs, which reads nothing), each choice
computes it, as separate requests would.

Usage counts the prompt once: the first choice's prompt side, the choices' output summed
(`merged_usage`); the ledger bills the prompt on the first choice's row only
(`GenerationRequest.choice`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from promptcache.engine.outputs import Usage
from promptcache.engine.request import GenerationRequest

MAX_CHOICES = 128  # OpenAI's limit on `n`


def choice_id(request_id: str, choice: int) -> str:
    """The engine id of choice `choice` of request `request_id`."""
    return request_id if choice == 0 else f"{request_id}-{choice}"


def fan_out(request: GenerationRequest, n: int) -> list[GenerationRequest]:
    """The request's n choices (the request itself is choice 0); it must have an id."""
    if not 1 <= n <= MAX_CHOICES:
        raise ValueError(f"n must be between 1 and {MAX_CHOICES}, got {n}")
    if request.request_id is None:
        raise ValueError("fan_out needs a request id")
    out = [request]
    for j in range(1, n):
        params = request.params
        if params.seed is not None:
            params = dataclasses.replace(params, seed=params.seed + j)
        rid = choice_id(request.request_id, j)
        out.append(dataclasses.replace(request, request_id=rid, params=params, choice=j))
    return out


def merged_usage(usages: Sequence[Usage]) -> Usage:
    """The usage of one prompt's choices: its prompt side once (the first choice's, which
    computed or reused it), the outputs summed."""
    first = usages[0]
    return dataclasses.replace(first, completion_tokens=sum(u.completion_tokens for u in usages))
