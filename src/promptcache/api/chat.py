"""`POST /v1/chat/completions`: OpenAI's Chat Completions, streamed or not, with cache usage,
tool calls and structured outputs (api/chat_tools.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_options import marks_of, openai_cache_settings
from promptcache.api.chat_tools import (
    chat_messages,
    chat_output,
    chat_tools,
    delta_of,
    finish_reason,
    tool_call,
)
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.logprobs import chat_logprobs
from promptcache.api.protocol import ChatCompletionRequest
from promptcache.api.sampling import Sampling, chat_logprob_k, sampling_params
from promptcache.api.streaming import SSE_DONE, StreamUsage, TextDeltas, output_pieces, sse
from promptcache.api.support import CHAT_RULES, refuse_unsupported
from promptcache.engine.client import Disconnected
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import RequestOutput, TokenLogprob, Usage
from promptcache.engine.request import GenerationRequest
from promptcache.text.token_bytes import TokenBytes
from promptcache.text.tools import ToolStream, parse_output

FINGERPRINT = "fp_promptcache"
ENDPOINT = "chat.completions"


def chat_usage(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "reused_tokens": u.reused_tokens,  # extension: physical reuse (docs/features)
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


async def create_chat_completion(
    req: ChatCompletionRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    refuse_unsupported(req, CHAT_RULES)
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    tools = chat_tools(req, ctx.canonical_tools)
    output = chat_output(req, tools)
    rendered = await ctx.render(chat_messages(req), "messages", tools, caller.tenant)
    max_tokens = req.max_completion_tokens or req.max_tokens
    params = sampling_params(
        Sampling(
            max_tokens=max_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            seed=req.seed,
            stop=req.stop,
            presence_penalty=req.presence_penalty,
            frequency_penalty=req.frequency_penalty,
            logit_bias=req.logit_bias,
            logprobs=chat_logprob_k(req.logprobs, req.top_logprobs),
            ignore_eos=req.ignore_eos,
        )
    )
    completion_id = new_id("chatcmpl-")
    request = GenerationRequest(
        request_id=completion_id,  # the id the client sees names the request in the books
        token_ids=rendered.token_ids,
        params=params,
        cache=openai_cache_settings(
            caller.tenant,
            req.prompt_cache_key,
            req.prompt_cache_retention,
            req.prompt_cache_options,
            marks_of(req.messages),
            rendered.messages,
        ),
        messages=rendered.messages,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
        output=output,
    )
    await ctx.prepare(request, "response_format")
    handle = ctx.submit(request, "messages")
    head = {
        "id": completion_id,
        "created": now(),
        "model": ctx.model_name,
        "system_fingerprint": FINGERPRINT,
        "service_tier": "default",
    }
    if req.stream:
        outputs = _recorded(handle.outputs(), ctx, caller.tenant)
        shape = _Shape(output, ctx.token_bytes if params.logprobs is not None else None)
        events = _stream(outputs, head, params.stop, StreamUsage.of(req.stream_options), shape)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    ctx.replays.record(caller.tenant, out)
    tb = ctx.token_bytes if params.logprobs is not None else None
    return JSONResponse(_completion(out, head, _Shape(output, tb)))


async def _recorded(
    outputs: AsyncGenerator[RequestOutput, None], ctx: ServerContext, tenant: str
) -> AsyncGenerator[RequestOutput, None]:
    """The outputs, the final one's ids kept for replay (`api.replays`)."""
    async with aclosing(outputs):
        async for out in outputs:
            if out.finished:
                ctx.replays.record(tenant, out)
            yield out


@dataclass(frozen=True, slots=True)
class _Shape:
    """What shapes a response's choices: the output kind, and token bytes where the request
    asked for logprobs (None: it did not)."""

    output: OutputSpec
    token_bytes: TokenBytes | None

    def logprobs(self, items: list[TokenLogprob]) -> dict[str, Any] | None:
        return None if self.token_bytes is None else chat_logprobs(items, self.token_bytes)


def _completion(out: RequestOutput, head: dict[str, Any], shape: _Shape) -> dict[str, Any]:
    output = shape.output
    content, calls = parse_output(out.text) if output.calls_tools else (out.text, [])
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content or None if calls else content,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = [tool_call(c) for c in calls]
    finish = finish_reason(out.finish_reason, bool(calls))
    logprobs = shape.logprobs(out.logprobs)
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish}
    return {
        **head,
        "object": "chat.completion",
        "choices": [choice],
        "usage": chat_usage(out.usage),
    }


async def _stream(
    outputs: AsyncGenerator[RequestOutput, None],
    head: dict[str, Any],
    stop: tuple[str, ...],
    usage: StreamUsage,
    shape: _Shape,
) -> AsyncIterator[str]:
    chunk = {**head, "object": "chat.completion.chunk"}
    output = shape.output
    pending: list[TokenLogprob] = []  # logprobs of tokens whose text is not sent yet
    so_far: list[dict[str, Any] | None] = [None]  # the usage of the latest output

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        logprobs = shape.logprobs(pending) if pending else None
        pending.clear()
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return sse({**chunk, "choices": [choice], **usage.extra(so_far[0])})

    yield event({"role": "assistant", "content": "", "refusal": None})
    deltas = TextDeltas(stop)
    calls = ToolStream() if output.calls_tools else None
    ids: dict[int, str] = {}
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the request
            async for out in outputs:
                so_far[0] = chat_usage(out.usage) if usage.every else None
                pending.extend(out.new_logprobs)
                for piece in output_pieces(deltas, calls, out):
                    yield event(delta_of(piece, ids))
                if out.finished:
                    yield event({}, finish_reason(out.finish_reason, bool(ids)))
                    if usage.last:
                        yield sse({**chunk, "choices": [], "usage": chat_usage(out.usage)})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield sse(APIError(500, f"generation failed: {exc}", "server_error").body())
    yield SSE_DONE
