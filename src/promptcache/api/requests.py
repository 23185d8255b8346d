"""From an API request to engine inputs: prompt token ids and sampling parameters."""

from __future__ import annotations

from typing import Any

from promptcache.api.errors import invalid
from promptcache.engine.sampling_params import SamplingParams
from promptcache.model.chat import chat_prompt_ids

MAX_STOP_STRINGS = 4


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Chat messages -> prompt ids through the model's chat template.

    The `developer` role is OpenAI's newer name for `system`; templates know `system`.
    Messages are rendered in order, so a stable system prompt and history form the prefix.
    """
    normalized = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]}
        for m in messages
    ]
    try:
        return chat_prompt_ids(tokenizer, normalized)
    except Exception as exc:  # the template refused the conversation (roles, order)
        raise invalid(
            f"the model's chat template cannot render these messages: {exc}", "messages"
        ) from exc


def sampling_params(
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None = None,
    stop: str | list[str] | None = None,
) -> SamplingParams:
    """OpenAI defaults: temperature 1, top_p 1, no stop; max tokens = what the context allows."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(f"'stop' takes at most {MAX_STOP_STRINGS} strings", "stop")
    if any(not s for s in stops):
        raise invalid("'stop' strings must not be empty", "stop")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        seed=seed,
        stop=tuple(stops),
    )
