"""`POST /v1/chat/completions`: OpenAI's Chat Completions, streamed or not, with cache usage."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_options import marks_of, openai_cache_settings
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.protocol import ChatCompletionRequest, message_parts
from promptcache.api.sampling import sampling_params
from promptcache.api.streaming import SSE_DONE, TextDeltas, sse
from promptcache.engine.client import Disconnected
from promptcache.engine.outputs import RequestOutput, Usage
from promptcache.engine.request import GenerationRequest

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
    if req.n not in (None, 1):
        raise invalid("n > 1 is not supported yet: send one request per choice", "n")
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options is only allowed when stream is true", "stream_options")
    messages = [{"role": m.role, "content": message_parts(m.content)} for m in req.messages]
    rendered = await ctx.render(messages, "messages")
    max_tokens = req.max_completion_tokens or req.max_tokens
    params = sampling_params(max_tokens, req.temperature, req.top_p, req.seed, req.stop)
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
    )
    handle = ctx.submit(request, "messages")
    head = {
        "id": completion_id,
        "created": now(),
        "model": ctx.model_name,
        "system_fingerprint": FINGERPRINT,
        "service_tier": "default",
    }
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        events = _stream(handle.outputs(), head, params.stop, include_usage)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    return JSONResponse(_completion(out, head))


def _completion(out: RequestOutput, head: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": out.text,
        "refusal": None,
        "annotations": [],
    }
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": out.finish_reason}
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
    include_usage: bool,
) -> AsyncIterator[str]:
    chunk = {**head, "object": "chat.completion.chunk"}
    extra = {"usage": None} if include_usage else {}

    def event(delta: dict[str, Any], finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return sse({**chunk, "choices": [choice], **extra})

    yield event({"role": "assistant", "content": "", "refusal": None})
    deltas = TextDeltas(stop)
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the request
            async for out in outputs:
                text = deltas.delta(out.text, out.finished)
                if text:
                    yield event({"content": text})
                if out.finished:
                    yield event({}, out.finish_reason)
                    if include_usage:
                        yield sse({**chunk, "choices": [], "usage": chat_usage(out.usage)})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield sse(APIError(500, f"generation failed: {exc}", "server_error").body())
    yield SSE_DONE
