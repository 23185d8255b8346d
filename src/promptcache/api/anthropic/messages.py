"""`POST /v1/messages`: Anthropic's Messages API, streamed or not, with cache usage.

The conversation (system, then messages) is rendered with the model's chat template, as
for the OpenAI endpoints, so a prefix cached through one API is read through the other.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.anthropic.caching import anthropic_cache_settings, anthropic_usage, marks_of
from promptcache.api.anthropic.protocol import MessagesRequest, TextBlock
from promptcache.api.auth import Caller
from promptcache.api.context import ServerContext
from promptcache.api.errors import APIError, anthropic_body, invalid
from promptcache.api.streaming import TextDeltas, sse
from promptcache.cache.settings import CacheSettings
from promptcache.engine.client import Disconnected
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams

ENDPOINT = "messages"


def _content(content: str | list[TextBlock]) -> str | list[str]:
    return content if isinstance(content, str) else [b.text for b in content]


def _sampling(req: MessagesRequest, max_stops: int) -> SamplingParams:
    stops = req.stop_sequences or []
    if len(stops) > max_stops:
        raise invalid(f"stop_sequences: at most {max_stops} are supported (max_stop_sequences)")
    if any(not s for s in stops):
        raise invalid("stop_sequences: each must be a non-empty string")
    return SamplingParams(
        max_tokens=req.max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        stop=tuple(stops),
    )


async def _request(req: MessagesRequest, ctx: ServerContext, caller: Caller) -> GenerationRequest:
    if req.messages[-1].role == "assistant":
        raise invalid(
            "messages: a final assistant message (a prefill) is not supported; end with a "
            "user message"
        )
    system = [{"role": "system", "content": _content(req.system)}] if req.system else []
    turns = [{"role": m.role, "content": _content(m.content)} for m in req.messages]
    rendered = await ctx.render(system + turns, "messages")
    return GenerationRequest(
        request_id=f"msg_{uuid.uuid4().hex[:24]}",
        token_ids=rendered.token_ids,
        params=_sampling(req, ctx.limits.max_stop_sequences),
        cache=anthropic_cache_settings(caller.tenant, marks_of(req), rendered.messages),
        messages=rendered.messages,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
    )


def _stop(out: RequestOutput) -> tuple[str | None, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a finished output."""
    if out.finish_reason == "length":
        return "max_tokens", None
    if out.stop_sequence is not None:
        return "stop_sequence", out.stop_sequence
    return "end_turn", None


def _message(
    rid: str,
    model: str,
    text: str | None,
    stop: tuple[str | None, str | None],
    usage: dict[str, Any],
) -> dict[str, Any]:
    content = [] if text is None else [{"type": "text", "text": text, "citations": None}]
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": stop[0],
        "stop_sequence": stop[1],
        "stop_details": None,
        "container": None,
        "usage": usage,
    }


async def create_message(
    req: MessagesRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    request = await _request(req, ctx, caller)
    handle = ctx.submit(request, "messages")
    rid = handle.request_id
    if req.stream:
        events = _stream(handle.outputs(), rid, ctx.model_name, request.cache)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    usage = anthropic_usage(out.usage, request.cache)
    return JSONResponse(_message(rid, ctx.model_name, out.text, _stop(out), usage))


def _event(kind: str, **data: Any) -> str:
    return sse({"type": kind, **data}, event=kind)


async def _stream(
    outputs: AsyncGenerator[RequestOutput, None],
    rid: str,
    model: str,
    settings: CacheSettings,
) -> AsyncIterator[str]:
    """Anthropic's event sequence. `message_start` waits for the first token: by then the
    prompt is computed and its cache usage is known."""
    deltas = TextDeltas(())
    started = False
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the request
            async for out in outputs:
                if not started:
                    started = True
                    usage = {**anthropic_usage(out.usage, settings), "output_tokens": 0}
                    start = _message(rid, model, None, (None, None), usage)
                    yield _event("message_start", message=start)
                    block = {"type": "text", "text": "", "citations": None}
                    yield _event("content_block_start", index=0, content_block=block)
                    yield _event("ping")
                text = deltas.delta(out.text, out.finished)
                if text:
                    delta = {"type": "text_delta", "text": text}
                    yield _event("content_block_delta", index=0, delta=delta)
                if out.finished:
                    for event in _closing(out, settings):
                        yield event
    except Exception as exc:  # headers are sent: report in-band, as Anthropic does
        err = APIError(500, f"generation failed: {exc}", "server_error")
        yield sse(anthropic_body(err), event="error")


def _closing(out: RequestOutput, settings: CacheSettings) -> list[str]:
    reason, sequence = _stop(out)
    usage = anthropic_usage(out.usage, settings)
    delta_usage = {
        k: usage[k]
        for k in (
            "input_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "output_tokens",
            "output_tokens_details",
            "server_tool_use",
        )
    }
    delta = {
        "stop_reason": reason,
        "stop_sequence": sequence,
        "stop_details": None,
        "container": None,
    }
    return [
        _event("content_block_stop", index=0),
        _event("message_delta", delta=delta, usage=delta_usage),
        _event("message_stop"),
    ]
