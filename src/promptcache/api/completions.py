"""`POST /v1/completions`: OpenAI's legacy Completions on a raw prompt (no chat template).

`prompt` is a string, a list of strings, a list of token ids or a list of such lists; each
prompt is its own engine request (its own cache lookup and ledger row) and its own choice,
in order. With `n` > 1 each prompt has n choices (`engine.choices`: one prefill), choice
`i * n + j` being prompt i's j-th; usage counts each prompt once. `echo` puts the prompt
before the completion; with `logprobs` it also reports the prompt tokens' logprobs (the
first token has none: null), which needs every prompt token computed, so such a request
reads nothing from the prefix cache (it still writes; the ledger's reason is `not_read`).
The same cache fields and usage as Chat Completions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_options import openai_cache_settings
from promptcache.api.chat import FINGERPRINT, chat_usage
from promptcache.api.choices import choice_count, finals, merged, submit_all
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.logprobs import completion_logprobs
from promptcache.api.protocol import CompletionRequest
from promptcache.api.sampling import openai_sampling
from promptcache.api.streaming import SSE_DONE, StreamUsage, TextDeltas, sse
from promptcache.api.support import COMPLETIONS_RULES, refuse_unsupported
from promptcache.engine.choices import MAX_CHOICES, fan_out, merged_usage
from promptcache.engine.client import Disconnected, RequestStream
from promptcache.engine.outputs import RequestOutput, TokenLogprob, Usage
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams

ENDPOINT = "completions"
MAX_PROMPTS = 128  # prompts in one request at most (each is a choice)


@dataclass(frozen=True, slots=True)
class _Prompt:
    """One prompt of the request: its token ids and its text (for `echo`)."""

    token_ids: list[int]
    text: str


def _is_ids(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) for t in value)


def _prompt_list(prompt: Any) -> list[str | list[int]]:
    """The request's prompts: one for a string or a token list, else one per element."""
    if isinstance(prompt, str) or (_is_ids(prompt) and prompt):
        return [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise invalid("'prompt' must not be empty", "prompt")
    if len(prompt) > MAX_PROMPTS:
        raise invalid(f"'prompt' takes at most {MAX_PROMPTS} prompts", "prompt")
    return list(prompt)


def _tokenize(tokenizer: Any, prompts: list[str | list[int]]) -> list[_Prompt]:
    """Token ids and text of each prompt (run in the render thread)."""
    vocab = len(tokenizer)
    out: list[_Prompt] = []
    for p in prompts:
        if isinstance(p, str):
            ids = list(tokenizer.encode(p))
            text = p
        else:
            if any(not 0 <= t < vocab for t in p):
                raise invalid(f"'prompt' token ids must be in [0, {vocab})", "prompt")
            ids, text = list(p), str(tokenizer.decode(p))
        if not ids:
            raise invalid("'prompt' must not be empty", "prompt")
        out.append(_Prompt(ids, text))
    return out


async def create_completion(
    req: CompletionRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    refuse_unsupported(req, COMPLETIONS_RULES)
    n = choice_count(req.n, req.best_of)
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    loop = asyncio.get_running_loop()
    prompts = await loop.run_in_executor(
        ctx.renderer, _tokenize, ctx.tokenizer, _prompt_list(req.prompt)
    )
    echoed = req.logprobs if req.echo else None
    params = openai_sampling(req, req.max_tokens, req.logprobs, echoed)
    if len(prompts) * n > MAX_CHOICES:
        msg = f"{len(prompts)} prompts x n={n} choices: at most {MAX_CHOICES} choices"
        raise invalid(msg, "n", "invalid_value")
    completion_id = new_id("cmpl-")
    requests = [
        choice
        for i, p in enumerate(prompts)
        for choice in fan_out(_request(req, p, params, f"{completion_id}-{i}", caller), n)
    ]
    # One refused (too long, queue full): none of them runs.
    streams = await submit_all(ctx, requests, "prompt")
    choices = _Choices(req, prompts, n, ctx)
    head = {
        "id": completion_id,
        "object": "text_completion",
        "created": now(),
        "model": ctx.model_name,
        "system_fingerprint": FINGERPRINT,
    }
    if req.stream:
        usage = StreamUsage.of(req.stream_options)
        events = _stream(streams, head, choices, params.stop, usage)
        return StreamingResponse(events, media_type="text/event-stream")
    outs = await finals(streams, disconnected)
    body = [choices.final(i, out) for i, out in enumerate(outs)]
    return JSONResponse({**head, "choices": body, "usage": _usage(outs_usage(outs), n)})


def _request(
    req: CompletionRequest, prompt: _Prompt, params: SamplingParams, rid: str, caller: Caller
) -> GenerationRequest:
    cache = openai_cache_settings(
        caller.tenant,
        req.prompt_cache_key,
        req.prompt_cache_retention,
        req.prompt_cache_options,
        [],
        (),
    )
    return GenerationRequest(
        request_id=rid,
        token_ids=prompt.token_ids,
        params=params,
        cache=cache,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
    )


def outs_usage(outs: Sequence[RequestOutput]) -> dict[int, Usage]:
    return {i: out.usage for i, out in enumerate(outs)}


def _usage(usages: dict[int, Usage], n: int) -> dict[str, Any]:
    """The choices' usage (choice index -> its usage so far): each prompt counted once,
    the outputs summed."""
    per_prompt: dict[int, list[Usage]] = {}
    for index in sorted(usages):
        per_prompt.setdefault(index // n, []).append(usages[index])
    merged = [merged_usage(group) for group in per_prompt.values()]
    total = Usage(
        prompt_tokens=sum(u.prompt_tokens for u in merged),
        cached_tokens=sum(u.cached_tokens for u in merged),
        cache_write_tokens=sum(u.cache_write_tokens for u in merged),
        completion_tokens=sum(u.completion_tokens for u in merged),
        reused_tokens=sum(u.reused_tokens for u in merged),
        written_tokens=sum(u.written_tokens for u in merged),
    )
    return chat_usage(total)


@dataclass(frozen=True, slots=True)
class _Choices:
    """How the request's choices are shaped: echo and logprobs. Choice `index` is choice
    `index % n` of prompt `index // n`."""

    req: CompletionRequest
    prompts: list[_Prompt]
    n: int
    ctx: ServerContext

    def prompt(self, index: int) -> _Prompt:
        return self.prompts[index // self.n]

    @property
    def echo(self) -> bool:
        return bool(self.req.echo)

    def final(self, index: int, out: RequestOutput) -> dict[str, Any]:
        prompt = self.prompt(index)
        text = prompt.text + out.text if self.echo else out.text
        logprobs = None
        if self.req.logprobs is not None:
            pairs: list[tuple[int, TokenLogprob | None]] = [(t.token_id, t) for t in out.logprobs]
            if self.echo:
                pairs = self._prompt_pairs(prompt, out.prompt_logprobs) + pairs
            start = 0 if self.echo else len(prompt.text)
            logprobs = completion_logprobs(pairs, self.ctx.token_bytes, start)
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": _finish(out.finish_reason),
        }

    @staticmethod
    def _prompt_pairs(
        prompt: _Prompt, logprobs: list[TokenLogprob]
    ) -> list[tuple[int, TokenLogprob | None]]:
        first: list[tuple[int, TokenLogprob | None]] = [(prompt.token_ids[0], None)]
        return first + [(t.token_id, t) for t in logprobs]

    def chunk(self, index: int, text: str, new: list[TokenLogprob], offset: int) -> dict[str, Any]:
        logprobs = None
        if self.req.logprobs is not None:
            pairs = [(t.token_id, t) for t in new]
            logprobs = completion_logprobs(pairs, self.ctx.token_bytes, offset)
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": None}

    def echo_chunk(self, index: int, out: RequestOutput) -> dict[str, Any]:
        """The echoed prompt, sent first (with its logprobs, which come with the first
        output)."""
        prompt = self.prompt(index)
        logprobs = None
        if self.req.logprobs is not None:
            pairs = self._prompt_pairs(prompt, out.prompt_logprobs)
            logprobs = completion_logprobs(pairs, self.ctx.token_bytes, 0)
        return {"index": index, "text": prompt.text, "logprobs": logprobs, "finish_reason": None}


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


async def _stream(
    streams: list[RequestStream],
    head: dict[str, Any],
    choices: _Choices,
    stop: tuple[str, ...],
    usage: StreamUsage,
) -> AsyncIterator[str]:
    """The choices' chunks as they come (interleaved by index), each choice's last with its
    finish reason; then the usage chunk where asked."""
    states = [_ChoiceState(TextDeltas(stop)) for _ in streams]
    usages: dict[int, Usage] = {}  # each choice's latest
    try:
        async for index, out in merged([s.outputs() for s in streams]):
            usages[index] = out.usage
            extra = usage.extra(_usage(usages, choices.n) if usage.every else None)
            for choice in states[index].pieces(index, out, choices):
                yield sse({**head, "choices": [choice], **extra})
        if usage.last:
            yield sse({**head, "choices": [], "usage": _usage(usages, choices.n)})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield sse(APIError(500, f"generation failed: {exc}", "server_error").body())
    yield SSE_DONE


@dataclass(slots=True)
class _ChoiceState:
    """One streamed choice: its text sent so far, and logprobs of tokens not yet sent."""

    deltas: TextDeltas
    offset: int = -1  # characters sent so far, counted from the prompt's start (-1: none)
    pending: list[TokenLogprob] = field(default_factory=list)

    def pieces(self, index: int, out: RequestOutput, choices: _Choices) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        if self.offset < 0:
            prompt = choices.prompt(index)
            self.offset = len(prompt.text)
            if choices.echo:
                got.append(choices.echo_chunk(index, out))
        self.pending.extend(out.new_logprobs)
        text = self.deltas.delta(out.text, out.finished)
        if text or (out.finished and self.pending):
            got.append(choices.chunk(index, text, self.pending, self.offset))
            self.offset += len(text)
            self.pending = []
        if out.finished:
            finish = _finish(out.finish_reason)
            got.append({"index": index, "text": "", "logprobs": None, "finish_reason": finish})
        return got
