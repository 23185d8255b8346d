"""`POST /v1/chat/completions`: OpenAI's Chat Completions, streamed or not, with cache usage,
tool calls and structured outputs (api/chat_tools.py)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_options import marks_of, openai_cache_settings
from promptcache.api.chat_tools import (
    chat_format,
    chat_messages,
    chat_output,
    chat_tools,
    delta_of,
    finish_reason,
    tool_call,
)
from promptcache.api.choices import choice_count, finals, merged, submit_all
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.logprobs import chat_logprobs
from promptcache.api.protocol import ChatCompletionRequest
from promptcache.api.sampling import chat_logprob_k, openai_sampling
from promptcache.api.streaming import SSE_DONE, StreamUsage, TextDeltas, output_pieces, sse
from promptcache.api.support import CHAT_RULES, refuse_unsupported
from promptcache.engine.choices import fan_out, merged_usage
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
    fmt = chat_format(req)
    output = chat_output(req, tools, fmt)
    rendered = await ctx.render(chat_messages(req), "messages", tools, caller.tenant, fmt)
    n = choice_count(req.n)
    if req.prompt_cache_prewarm and n > 1:
        raise invalid("a prewarm (prompt_cache_prewarm) generates nothing: n must be 1", "n")
    max_tokens = req.max_completion_tokens or req.max_tokens
    params = openai_sampling(req, max_tokens, chat_logprob_k(req.logprobs, req.top_logprobs))
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
        prefill_only=req.prompt_cache_prewarm,
    )
    await ctx.prepare(request, "response_format")
    streams = await submit_all(ctx, fan_out(request, n), "messages")
    head = {
        "id": completion_id,
        "created": now(),
        "model": ctx.model_name,
        "system_fingerprint": FINGERPRINT,
        "service_tier": "default",
    }
    shape = _Shape(output, ctx.token_bytes if params.logprobs is not None else None)
    if req.stream:
        outputs = _recorded(merged([s.outputs() for s in streams]), ctx, caller.tenant)
        events = _stream(outputs, n, head, params.stop, StreamUsage.of(req.stream_options), shape)
        return StreamingResponse(events, media_type="text/event-stream")
    outs = await finals(streams, disconnected)
    for out in outs:
        ctx.replays.record(caller.tenant, out)
    return JSONResponse(_completion(outs, head, shape))


async def _recorded(
    outputs: AsyncGenerator[tuple[int, RequestOutput], None], ctx: ServerContext, tenant: str
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """The choices' outputs, each final one's ids kept for replay (`api.replays`)."""
    async with aclosing(outputs):
        async for index, out in outputs:
            if out.finished:
                ctx.replays.record(tenant, out)
            yield index, out


@dataclass(frozen=True, slots=True)
class _Shape:
    """What shapes a response's choices: the output kind, and token bytes where the request
    asked for logprobs (None: it did not)."""

    output: OutputSpec
    token_bytes: TokenBytes | None

    def logprobs(self, items: list[TokenLogprob]) -> dict[str, Any] | None:
        return None if self.token_bytes is None else chat_logprobs(items, self.token_bytes)


def _choice(index: int, out: RequestOutput, shape: _Shape) -> dict[str, Any]:
    content, calls = parse_output(out.text) if shape.output.calls_tools else (out.text, [])
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
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def _completion(outs: list[RequestOutput], head: dict[str, Any], shape: _Shape) -> dict[str, Any]:
    return {
        **head,
        "object": "chat.completion",
        "choices": [_choice(i, out, shape) for i, out in enumerate(outs)],
        "usage": chat_usage(merged_usage([o.usage for o in outs])),
    }


@dataclass(slots=True)
class _ChoiceStream:
    """One streamed choice: its text and tool calls sent so far, and the logprobs of tokens
    whose text is not sent yet."""

    index: int
    deltas: TextDeltas
    calls: ToolStream | None
    ids: dict[int, str] = field(default_factory=dict)  # call index -> call id
    pending: list[TokenLogprob] = field(default_factory=list)

    def choices(self, out: RequestOutput, shape: _Shape) -> list[dict[str, Any]]:
        """The `choices` entries (one per chunk) that `out` adds to the stream."""
        self.pending.extend(out.new_logprobs)
        got = [
            self._entry(delta_of(p, self.ids), shape)
            for p in output_pieces(self.deltas, self.calls, out)
        ]
        if out.finished:
            got.append(self._entry({}, shape, finish_reason(out.finish_reason, bool(self.ids))))
        return got

    def _entry(
        self, delta: dict[str, Any], shape: _Shape, finish: str | None = None
    ) -> dict[str, Any]:
        logprobs = shape.logprobs(self.pending) if self.pending else None
        self.pending = []
        return {"index": self.index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}


async def _stream(
    outputs: AsyncGenerator[tuple[int, RequestOutput], None],
    n: int,
    head: dict[str, Any],
    stop: tuple[str, ...],
    usage: StreamUsage,
    shape: _Shape,
) -> AsyncIterator[str]:
    """Each choice's role chunk, then the choices' chunks as they come (interleaved by
    index), each choice's last with its finish reason; then the usage chunk where asked."""
    chunk = {**head, "object": "chat.completion.chunk"}
    calls = shape.output.calls_tools
    states = [_ChoiceStream(i, TextDeltas(stop), ToolStream() if calls else None) for i in range(n)]
    usages: dict[int, Usage] = {}  # each choice's latest

    def event(choice: dict[str, Any]) -> str:
        so_far = _usage_of(usages) if usage.every and usages else None
        return sse({**chunk, "choices": [choice], **usage.extra(so_far)})

    for i in range(n):
        role = {"role": "assistant", "content": "", "refusal": None}
        yield event({"index": i, "delta": role, "logprobs": None, "finish_reason": None})
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the requests
            async for index, out in outputs:
                usages[index] = out.usage
                for choice in states[index].choices(out, shape):
                    yield event(choice)
        if usage.last:
            yield sse({**chunk, "choices": [], "usage": _usage_of(usages)})
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        yield sse(APIError(500, f"generation failed: {exc}", "server_error").body())
    yield SSE_DONE


def _usage_of(usages: dict[int, Usage]) -> dict[str, Any]:
    """The merged usage of the choices seen so far, in index order."""
    return chat_usage(merged_usage([usages[i] for i in sorted(usages)]))
