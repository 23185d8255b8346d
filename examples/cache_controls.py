"""The seed tutorial's flow with the providers' own cache controls: prewarm the long
instruction prefix, ask, then ask with the instructions changed and read why the cache
missed, in OpenAI's shape, in Anthropic's, and in ours beside them.

    make serve                                    # in one terminal
    .venv/bin/python examples/cache_controls.py   # in another
"""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
from openai import OpenAI

BASE = os.environ.get("PROMPTCACHE_BASE_URL", "http://127.0.0.1:8000")
KEY = os.environ.get("PROMPTCACHE_API_KEY", "sk-local")
MODEL = os.environ.get("PROMPTCACHE_MODEL", "smollm2-135m-instruct")
openai_client = OpenAI(base_url=f"{BASE}/v1", api_key=KEY)
anthropic_client = anthropic.Anthropic(base_url=BASE, api_key=KEY)

long_prefix = (
    "You are a helpful assistant specialized in machine learning. Explain concepts "
    "clearly, with one short example each. "
) * 200
dated = "Today is 2026-12-07. " + long_prefix  # a date at the start: the usual mistake


def respond(instructions: str, question: str, **options: Any) -> Any:
    return openai_client.responses.create(
        model=MODEL,
        instructions=instructions,
        input=question,
        max_output_tokens=16,
        extra_body={"prompt_cache_options": options} if options else None,
    )


def show(label: str, value: Any) -> None:
    print(f"{label}: {json.dumps(value)}")


if __name__ == "__main__":
    warm = respond(long_prefix, "What's overfitting?", prewarm=True)
    assert warm.usage is not None
    show("prewarm written", warm.usage.input_tokens_details.cache_write_tokens)
    first = respond(long_prefix, "What's overfitting in machine learning?")
    assert first.usage is not None
    show("first question cached_tokens", first.usage.input_tokens_details.cached_tokens)
    changed = respond(dated, "What's regularization?", comparison_response_id=first.id)
    show("OpenAI prompt_cache_diagnostics", changed.model_dump()["prompt_cache_diagnostics"])
    show("ours", changed.model_extra["promptcache_diagnostics"] if changed.model_extra else None)
    system: Any = [{"type": "text", "text": long_prefix, "cache_control": {"type": "ephemeral"}}]
    ask = [{"role": "user", "content": "What's overfitting?"}]
    earlier = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=16,
        system=system,
        messages=ask,  # type: ignore[arg-type]
    )
    system[0]["text"] = dated
    later = anthropic_client.messages.create(
        model=MODEL,
        max_tokens=16,
        system=system,
        messages=ask,  # type: ignore[arg-type]
        extra_body={"diagnostics": {"previous_message_id": earlier.id}},
    )
    show("Anthropic diagnostics", later.model_dump()["diagnostics"])
