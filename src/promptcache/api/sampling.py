"""From an API request's sampling fields to the engine's `SamplingParams`, with OpenAI's
defaults and limits."""

from __future__ import annotations

from promptcache.api.errors import invalid
from promptcache.engine.sampling_params import SamplingParams

MAX_STOP_STRINGS = 4


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
