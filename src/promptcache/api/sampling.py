"""From an API request's sampling fields to the engine's `SamplingParams`, with OpenAI's
defaults and limits."""

from __future__ import annotations

from dataclasses import dataclass

from promptcache.api.errors import invalid
from promptcache.api.protocol import ChatCompletionRequest, CompletionRequest
from promptcache.engine.sampling_params import MAX_LOGPROBS, SamplingParams

MAX_STOP_STRINGS = 4
MAX_BIAS = 100.0
INVALID = "invalid_value"


@dataclass(frozen=True, slots=True)
class Sampling:
    """An endpoint's sampling fields, as the client sent them (None: OpenAI's default)."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: int | None = None  # top logprobs per sampled token; None: no logprobs
    prompt_logprobs: int | None = None  # ... per prompt token (Completions' echo)
    ignore_eos: bool = False  # vLLM's extension: generate past EOS


def openai_sampling(
    req: ChatCompletionRequest | CompletionRequest,
    max_tokens: int | None,
    logprobs: int | None,
    prompt_logprobs: int | None = None,
) -> SamplingParams:
    """The sampling fields Chat and Completions share; the endpoint gives those it names
    its own way (its token limit, its logprobs)."""
    return sampling_params(
        Sampling(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            logit_bias=req.logit_bias,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            ignore_eos=req.ignore_eos,
        )
    )


def sampling_params(s: Sampling) -> SamplingParams:
    """OpenAI defaults: temperature 1, top_p 1, no stop, no penalties or bias; max tokens =
    what the context allows."""
    stops = [s.stop] if isinstance(s.stop, str) else list(s.stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise invalid(f"'stop' takes at most {MAX_STOP_STRINGS} strings", "stop")
    if any(not x for x in stops):
        raise invalid("'stop' strings must not be empty", "stop")
    try:
        return SamplingParams(
            max_tokens=s.max_tokens,
            temperature=1.0 if s.temperature is None else s.temperature,
            top_p=1.0 if s.top_p is None else s.top_p,
            seed=s.seed,
            stop=tuple(stops),
            presence_penalty=s.presence_penalty or 0.0,
            frequency_penalty=s.frequency_penalty or 0.0,
            logit_bias=logit_bias(s.logit_bias),
            logprobs=s.logprobs,
            prompt_logprobs=s.prompt_logprobs,
            ignore_eos=s.ignore_eos,
        )
    except ValueError as exc:  # a limit the request models above do not check
        raise invalid(str(exc), None, INVALID) from exc


def logit_bias(bias: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """OpenAI's `logit_bias` (token id as a string → -100..100) as (id, bias) pairs."""
    pairs: list[tuple[int, float]] = []
    for key, value in (bias or {}).items():
        if not key.strip().isdigit():
            raise invalid(
                f"'logit_bias' keys must be token ids, got {key!r}", "logit_bias", INVALID
            )
        if not -MAX_BIAS <= value <= MAX_BIAS:
            msg = f"'logit_bias' values must be between -100 and 100, got {value}"
            raise invalid(msg, "logit_bias", INVALID)
        pairs.append((int(key), float(value)))
    return tuple(sorted(pairs))


def chat_logprob_k(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """Chat's `logprobs` + `top_logprobs` as the engine's k (None: no logprobs)."""
    if top_logprobs is not None and not logprobs:
        raise invalid("'top_logprobs' requires 'logprobs' to be true", "top_logprobs", INVALID)
    if top_logprobs is not None and not 0 <= top_logprobs <= MAX_LOGPROBS:
        raise invalid(
            f"'top_logprobs' must be between 0 and {MAX_LOGPROBS}", "top_logprobs", INVALID
        )
    return (top_logprobs or 0) if logprobs else None
