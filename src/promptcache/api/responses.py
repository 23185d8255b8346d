"""`POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API.

`previous_response_id` continues a stored conversation: the earlier input and reply are
rendered before the new input, so the whole history is a cached prefix. As upstream, the
earlier request's `instructions` are not carried over.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_options import marks_of, openai_cache_settings
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.protocol import ResponsesRequest, message_parts
from promptcache.api.sampling import sampling_params
from promptcache.api.streaming import TextDeltas, sse
from promptcache.engine.client import Disconnected
from promptcache.engine.outputs import RequestOutput, Usage
from promptcache.engine.request import GenerationRequest

ENDPOINT = "responses"


def response_usage(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "cache_write_tokens": u.cache_write_tokens,
            "reused_tokens": u.reused_tokens,  # extension: physical reuse (docs/features)
        },
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


@dataclass(slots=True)
class _Draft:
    """The Response object under construction (fields as the API names them)."""

    req: ResponsesRequest
    model: str
    id: str = field(default_factory=lambda: new_id("resp_"))
    item_id: str = field(default_factory=lambda: new_id("msg_"))
    created_at: int = field(default_factory=now)

    def message(self, text: str, status: str) -> dict[str, Any]:
        content = [] if status == "in_progress" else [self.part(text)]
        return {
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def body(self, out: RequestOutput | None) -> dict[str, Any]:
        r = self.req
        status, output, usage, incomplete = "in_progress", [], None, None
        if out is not None:
            status = "incomplete" if out.finish_reason == "length" else "completed"
            output = [self.message(out.text, status)]
            usage = response_usage(out.usage)
            if status == "incomplete":
                incomplete = {"reason": "max_output_tokens"}
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": r.store is not False,
            "temperature": 1.0 if r.temperature is None else r.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0 if r.top_p is None else r.top_p,
            "truncation": "disabled",
            "metadata": r.metadata or {},
            # Optional fields: present only when set (the schema has no null for them).
            **_present(
                usage=usage,
                user=r.user,
                prompt_cache_key=r.prompt_cache_key,
                prompt_cache_retention=r.prompt_cache_retention,
                prompt_cache_options=(
                    r.prompt_cache_options.model_dump(exclude_none=True)
                    if r.prompt_cache_options
                    else None
                ),
            ),
        }


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


async def create_response(
    req: ResponsesRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    tenant = caller.tenant
    history = _history(req, ctx, tenant)
    new_input = _input_messages(req)
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    rendered = await ctx.render(system + history + new_input, "input")
    draft = _Draft(req, ctx.model_name)
    request = GenerationRequest(
        request_id=draft.id,  # the id the client sees names the request in the books
        token_ids=rendered.token_ids,
        params=sampling_params(req.max_output_tokens, req.temperature, req.top_p),
        cache=openai_cache_settings(
            tenant,
            req.prompt_cache_key,
            req.prompt_cache_retention,
            req.prompt_cache_options,
            marks_of(req.input if isinstance(req.input, list) else [], len(system + history)),
            rendered.messages,
        ),
        messages=rendered.messages,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
    )
    handle = ctx.submit(request, "input")
    conversation = history + new_input
    if req.stream:
        events = _stream(handle.outputs(), draft, ctx, tenant, conversation)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    body = _finish(out, draft, ctx, tenant, conversation)
    return JSONResponse(body)


def get_response(response_id: str, ctx: ServerContext, tenant: str) -> JSONResponse:
    stored = ctx.store.get(tenant, response_id)
    if stored is None:
        raise APIError(
            404,
            f"Response with id '{response_id}' not found.",
            "invalid_request_error",
            "response_id",
            "not_found",
        )
    return JSONResponse(stored.response)


def _history(req: ResponsesRequest, ctx: ServerContext, tenant: str) -> list[dict[str, Any]]:
    if req.previous_response_id is None:
        return []
    stored = ctx.store.get(tenant, req.previous_response_id)
    if stored is None:
        raise invalid(
            f"Previous response with id '{req.previous_response_id}' not found.",
            "previous_response_id",
            "previous_response_not_found",
        )
    return stored.conversation


def _input_messages(req: ResponsesRequest) -> list[dict[str, Any]]:
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    if not req.input:
        raise invalid("'input' must not be empty", "input")
    return [{"role": m.role, "content": message_parts(m.content)} for m in req.input]


def _finish(
    out: RequestOutput,
    draft: _Draft,
    ctx: ServerContext,
    tenant: str,
    conversation: list[dict[str, Any]],
) -> dict[str, Any]:
    body = draft.body(out)
    if draft.req.store is not False:
        reply = {"role": "assistant", "content": out.text}
        ctx.store.put(tenant, body, [*conversation, reply])
    return body


async def _stream(
    outputs: AsyncGenerator[RequestOutput, None],
    draft: _Draft,
    ctx: ServerContext,
    tenant: str,
    conversation: list[dict[str, Any]],
) -> AsyncIterator[str]:
    seq = iter(range(1 << 62))
    where = {"item_id": draft.item_id, "output_index": 0, "content_index": 0}

    def ev(kind: str, **data: Any) -> str:
        return sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

    yield ev("response.created", response=draft.body(None))
    yield ev("response.in_progress", response=draft.body(None))
    yield ev("response.output_item.added", output_index=0, item=draft.message("", "in_progress"))
    yield ev("response.content_part.added", **where, part=draft.part(""))
    deltas = TextDeltas(())
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the request
            async for out in outputs:
                text = deltas.delta(out.text, out.finished)
                if text:
                    yield ev("response.output_text.delta", **where, delta=text, logprobs=[])
                if out.finished:
                    for event in _closing(out, draft, ctx, tenant, conversation, ev, where):
                        yield event
    except Exception as exc:  # headers are sent: report in-band with an `error` event
        yield ev("error", code="server_error", message=f"generation failed: {exc}", param=None)


def _closing(
    out: RequestOutput,
    draft: _Draft,
    ctx: ServerContext,
    tenant: str,
    conversation: list[dict[str, Any]],
    ev: Any,
    where: dict[str, Any],
) -> Iterator[str]:
    body = _finish(out, draft, ctx, tenant, conversation)
    item = body["output"][0]
    yield ev("response.output_text.done", **where, text=out.text, logprobs=[])
    yield ev("response.content_part.done", **where, part=item["content"][0])
    yield ev("response.output_item.done", output_index=0, item=item)
    kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
    yield ev(kind, response=body)
