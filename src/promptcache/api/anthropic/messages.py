"""`POST /v1/messages`: Anthropic's Messages API, streamed or not, with cache usage.

The conversation (tools, the output schema, system, then messages) is rendered with the
model's chat template, as for the OpenAI endpoints, so a prefix cached through one API is
read through the other. An answer's calls are `tool_use` blocks after its text
(api/anthropic/tools.py), streamed as `input_json_delta` pieces, with `stop_reason:
tool_use`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.anthropic.caching import anthropic_cache_settings, anthropic_usage, marks_of
from promptcache.api.anthropic.protocol import DiagnosticsParam, MessagesPrompt, MessagesRequest
from promptcache.api.anthropic.tools import (
    anthropic_format,
    anthropic_output,
    anthropic_tools,
    conversation,
    custom_tools,
    new_tool_use_id,
    tool_use_block,
)
from promptcache.api.auth import Caller
from promptcache.api.cache_diagnostics import anthropic_fields, remember
from promptcache.api.context import ServerContext
from promptcache.api.errors import APIError, anthropic_body, invalid
from promptcache.api.streaming import TextDeltas, output_pieces, sse
from promptcache.api.support import ANTHROPIC_RULES, refuse_unsupported
from promptcache.cache.settings import CacheSettings
from promptcache.engine.client import Disconnected
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest
from promptcache.engine.sampling_params import SamplingParams
from promptcache.text.chat import RenderedChat
from promptcache.text.tools import CallDelta, ToolStream, parse_output

ENDPOINT = "messages"


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


@dataclass(frozen=True, slots=True)
class RenderedMessages:
    """A Messages request's prompt as the engine will see it, with its cache settings
    (explicit breakpoints from `cache_control`) and output constraint."""

    rendered: RenderedChat
    cache: CacheSettings
    output: OutputSpec


async def render_messages(req: MessagesPrompt, ctx: ServerContext, tenant: str) -> RenderedMessages:
    """Tools, the output schema, system, then messages, rendered as `POST /v1/messages`
    runs them."""
    if req.messages[-1].role == "assistant":
        raise invalid(
            "messages: a final assistant message (a prefill) is not supported; end with a "
            "user message"
        )
    messages, where = conversation(req)
    tools = anthropic_tools(req, ctx.canonical_tools)
    fmt = anthropic_format(req)
    output = anthropic_output(req, tools, fmt)
    marks = marks_of(req, custom_tools(req), where)
    rendered = await ctx.render(messages, "messages", tools, tenant, fmt)
    cache = anthropic_cache_settings(tenant, marks, rendered.messages, rendered.tools_end)
    return RenderedMessages(rendered, cache, output)


async def _request(req: MessagesRequest, ctx: ServerContext, caller: Caller) -> GenerationRequest:
    prompt = await render_messages(req, ctx, caller.tenant)
    return GenerationRequest(
        request_id=f"msg_{uuid.uuid4().hex[:24]}",
        token_ids=prompt.rendered.token_ids,
        params=_sampling(req, ctx.limits.max_stop_sequences),
        cache=prompt.cache,
        messages=prompt.rendered.messages,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
        output=prompt.output,
        prefill_only=req.prompt_cache_prewarm,
    )


def _stop(out: RequestOutput, called: bool = False) -> tuple[str | None, str | None]:
    """Anthropic's (stop_reason, stop_sequence) for a finished output."""
    if out.finish_reason == "length":
        return "max_tokens", None
    if out.stop_sequence is not None:
        return "stop_sequence", out.stop_sequence
    return ("tool_use" if called else "end_turn"), None


def _content(out: RequestOutput, output: OutputSpec, prewarm: bool) -> list[dict[str, Any]]:
    """The answer's blocks: its text (if any, or if there is nothing else), then its calls;
    none for a prewarm."""
    if prewarm:
        return []
    text, calls = parse_output(out.text) if output.calls_tools else (out.text, [])
    blocks = [_text(text)] if text or not calls else []
    return blocks + [tool_use_block(c) for c in calls]


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def _message(
    rid: str,
    model: str,
    content: list[dict[str, Any]],
    stop: tuple[str | None, str | None],
    usage: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
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
        **(extra or {}),  # diagnostics, where the request asked for them
    }


async def create_message(
    req: MessagesRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    refuse_unsupported(req, ANTHROPIC_RULES)
    request = await _request(req, ctx, caller)
    formatted = req.output_config is not None and req.output_config.format is not None
    await ctx.prepare(request, "output_config.format" if formatted else "tools")
    handle = ctx.submit(request, "messages")
    rid = handle.request_id
    diagnosis = _Diagnosis(ctx, caller.tenant, request, req.diagnostics)
    if req.stream:
        stream = _Stream(
            rid, ctx.model_name, request.cache, request.output, diagnosis, request.prefill_only
        )
        events = stream.events(handle.outputs(), ctx, caller.tenant)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    ctx.replays.record(caller.tenant, out)
    usage = anthropic_usage(out.usage, request.cache)
    content = _content(out, request.output, request.prefill_only)
    stop = _stop(out, any(b["type"] == "tool_use" for b in content))
    extra = diagnosis.fields(out)
    diagnosis.remember(out)
    return JSONResponse(_message(rid, ctx.model_name, content, stop, usage, extra))


@dataclass(frozen=True, slots=True)
class _Diagnosis:
    """The request's `diagnostics` (api/cache_diagnostics.py): compared when its prompt is
    computed, remembered for later requests when it ends."""

    ctx: ServerContext
    tenant: str
    request: GenerationRequest
    asked: DiagnosticsParam | None

    def fields(self, out: RequestOutput) -> dict[str, Any]:
        if self.asked is None:
            return {}
        previous = self.asked.previous_message_id
        return anthropic_fields(self.ctx, self.tenant, self.request, out, previous)

    def remember(self, out: RequestOutput) -> None:
        remember(self.ctx, self.tenant, self.request, out)


def _event(kind: str, **data: Any) -> str:
    return sse({"type": kind, **data}, event=kind)


@dataclass(slots=True)
class _Stream:
    """Anthropic's event sequence. `message_start` waits for the first token: by then the
    prompt is computed and its cache usage is known. A text answer's block opens at once;
    with tools, a text block opens at the first text and each call is a `tool_use` block
    whose input streams as `input_json_delta` pieces."""

    rid: str
    model: str
    settings: CacheSettings
    output: OutputSpec
    diagnosis: _Diagnosis
    prewarm: bool = False  # no content blocks at all
    block: int | None = None  # the open block's index
    blocks: int = 0  # blocks opened so far
    calls: int = 0

    async def events(
        self, outputs: AsyncGenerator[RequestOutput, None], ctx: ServerContext, tenant: str
    ) -> AsyncIterator[str]:
        deltas = TextDeltas(())
        reader = ToolStream() if self.output.calls_tools else None
        started = False
        try:
            async with aclosing(outputs):  # leaving early (client gone) aborts the request
                async for out in outputs:
                    if not started:
                        started = True
                        for event in self._start(out):
                            yield event
                    for piece in output_pieces(deltas, reader, out):
                        for event in self._piece(piece):
                            yield event
                    if out.finished:
                        ctx.replays.record(tenant, out)
                        self.diagnosis.remember(out)
                        for event in self._closing(out):
                            yield event
        except Exception as exc:  # headers are sent: report in-band, as Anthropic does
            err = APIError(500, f"generation failed: {exc}", "server_error")
            yield sse(anthropic_body(err), event="error")

    def _start(self, out: RequestOutput) -> list[str]:
        usage = {**anthropic_usage(out.usage, self.settings), "output_tokens": 0}
        extra = self.diagnosis.fields(out)
        message = _message(self.rid, self.model, [], (None, None), usage, extra)
        events = [_event("message_start", message=message)]
        if not self.output.calls_tools and not self.prewarm:
            events += self._open(_text(""))
        return [*events, _event("ping")]

    def _open(self, block: dict[str, Any]) -> list[str]:
        events = self._close()
        self.block, self.blocks = self.blocks, self.blocks + 1
        return [*events, _event("content_block_start", index=self.block, content_block=block)]

    def _close(self) -> list[str]:
        if self.block is None:
            return []
        index, self.block = self.block, None
        return [_event("content_block_stop", index=index)]

    def _piece(self, piece: CallDelta) -> list[str]:
        if piece.index is None:
            if not piece.content:
                return []
            events = self._open(_text("")) if self.block is None else []
            delta = {"type": "text_delta", "text": piece.content}
            return [*events, _event("content_block_delta", index=self.block, delta=delta)]
        if piece.name is not None:
            self.calls += 1
            block = {"type": "tool_use", "id": new_tool_use_id(), "name": piece.name, "input": {}}
            return self._open({**block, "caller": {"type": "direct"}})
        delta = {"type": "input_json_delta", "partial_json": piece.arguments}
        return [_event("content_block_delta", index=self.block, delta=delta)]

    def _closing(self, out: RequestOutput) -> list[str]:
        reason, sequence = _stop(out, self.calls > 0)
        usage = anthropic_usage(out.usage, self.settings)
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
        empty = not self.blocks and not self.prewarm  # an empty answer: one text block
        opened = self._open(_text("")) if empty else []
        return [
            *opened,
            *self._close(),
            _event("message_delta", delta=delta, usage=delta_usage),
            _event("message_stop"),
        ]
