"""`POST /v1/responses` and `GET /v1/responses/{id}`: OpenAI's Responses API.

`previous_response_id` continues a stored conversation: the earlier input and reply (its
function calls too) are rendered before the new input, so the whole history is a cached
prefix. As upstream, the earlier request's `instructions` are not carried over. Tools and
`text.format` are read in api/responses_tools.py; an answer's calls are `function_call`
output items after its message (if it wrote text before them).

`prompt_cache_options.prewarm` computes and caches the prompt and generates nothing: a
completed response with `output: []` (streamed: created, in_progress, completed). Stored,
it continues from its input alone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from promptcache.api.auth import Caller
from promptcache.api.cache_diagnostics import (
    comparison,
    extension,
    openai_diagnostics,
    remember,
)
from promptcache.api.cache_options import marks_of, openai_cache_settings
from promptcache.api.context import ServerContext, new_id, now
from promptcache.api.errors import APIError, invalid
from promptcache.api.logprobs import content_entries
from promptcache.api.protocol import ResponsesRequest
from promptcache.api.responses_tools import (
    echo_choice,
    echo_format,
    echo_tools,
    input_messages,
    responses_format,
    responses_output,
    responses_tools,
)
from promptcache.api.sampling import Sampling, sampling_params
from promptcache.api.streaming import TextDeltas, output_pieces, sse
from promptcache.api.support import RESPONSES_RULES, refuse_unsupported
from promptcache.cache.settings import CacheSettings
from promptcache.engine.client import Disconnected
from promptcache.engine.grammar.spec import OutputSpec
from promptcache.engine.outputs import RequestOutput, TokenLogprob, Usage
from promptcache.engine.request import GenerationRequest
from promptcache.text.chat import RenderedChat
from promptcache.text.token_bytes import TokenBytes
from promptcache.text.tools import CallDelta, ParsedCall, ToolStream, parse_output

ENDPOINT = "responses"
LOGPROBS = "message.output_text.logprobs"  # the `include` entry that asks for them


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
    output_spec: OutputSpec = field(default_factory=OutputSpec)
    id: str = field(default_factory=lambda: new_id("resp_"))
    item_id: str = field(default_factory=lambda: new_id("msg_"))
    created_at: int = field(default_factory=now)
    call_ids: list[tuple[str, str]] = field(default_factory=list)  # (item id, call id) each
    token_bytes: TokenBytes | None = None  # set where output_text.logprobs are included
    diagnostics: dict[str, Any] | None = None  # prompt_cache_diagnostics, where asked
    our_diagnostics: dict[str, Any] | None = None  # ... and ours beside it
    prewarm: bool = False  # prompt_cache_options.prewarm: no output at all

    def entries(self, items: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
        """`output_text.logprobs` of these tokens (empty unless included)."""
        return [] if self.token_bytes is None else content_entries(items, self.token_bytes)

    def ids_of(self, index: int) -> tuple[str, str]:
        """The item id and call id of the answer's call `index` (made on first use, so the
        stream and the final object agree)."""
        while len(self.call_ids) <= index:
            self.call_ids.append((new_id("fc_"), new_id("call_")))
        return self.call_ids[index]

    def call_item(self, index: int, name: str, arguments: str, status: str) -> dict[str, Any]:
        item_id, call_id = self.ids_of(index)
        return {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": name,
            "arguments": arguments,
            "status": status,
        }

    def answer(self, text: str) -> tuple[str, list[ParsedCall]]:
        """The answer's text before its calls, and its calls (`max_tool_calls` at most)."""
        if not self.output_spec.calls_tools:
            return text, []
        content, calls = parse_output(text)
        return content, calls[: self.req.max_tool_calls or None]

    def items(self, out: RequestOutput, status: str) -> list[dict[str, Any]]:
        content, calls = self.answer(out.text)
        message = [self.message(content, status, out.logprobs)] if content or not calls else []
        return message + [
            self.call_item(i, c.name, c.arguments, status) for i, c in enumerate(calls)
        ]

    def message(
        self, text: str, status: str, logprobs: Sequence[TokenLogprob] = ()
    ) -> dict[str, Any]:
        content = [] if status == "in_progress" else [self.part(text, self.entries(logprobs))]
        return {
            "type": "message",
            "id": self.item_id,
            "status": status,
            "role": "assistant",
            "content": content,
        }

    @staticmethod
    def part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}

    def body(self, out: RequestOutput | None) -> dict[str, Any]:
        r = self.req
        status, output, usage, incomplete = "in_progress", [], None, None
        if out is not None:
            status = "incomplete" if out.finish_reason == "length" else "completed"
            output = [] if self.prewarm else self.items(out, status)
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
            "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": r.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "store": r.store is not False,
            "temperature": 1.0 if r.temperature is None else r.temperature,
            "text": {"format": echo_format(r)},
            "tool_choice": echo_choice(r),
            "tools": echo_tools(r),
            "top_p": 1.0 if r.top_p is None else r.top_p,
            "truncation": "disabled",
            "metadata": r.metadata or {},
            # Optional fields: present only when set (the schema has no null for them).
            **_present(
                usage=usage,
                max_tool_calls=r.max_tool_calls,
                top_logprobs=r.top_logprobs,
                user=r.user,
                prompt_cache_key=r.prompt_cache_key,
                prompt_cache_retention=r.prompt_cache_retention,
                prompt_cache_options=_applied_options(r),
                prompt_cache_diagnostics=self.diagnostics,
                promptcache_diagnostics=self.our_diagnostics,
            ),
        }


def _applied_options(r: ResponsesRequest) -> dict[str, Any] | None:
    """The prompt-caching options applied, as the Response reports them (mode and ttl
    filled in with their defaults)."""
    options = r.prompt_cache_options
    if options is None:
        return None
    applied = options.model_dump(exclude_none=True, exclude={"prewarm"})
    return {"mode": "implicit", "ttl": "30m", **applied}


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


async def create_response(
    req: ResponsesRequest,
    ctx: ServerContext,
    caller: Caller,
    disconnected: Disconnected | None = None,
) -> JSONResponse | StreamingResponse:
    ctx.check_model(req.model)
    refuse_unsupported(req, RESPONSES_RULES)
    tenant = caller.tenant
    prompt = await render_request(req, ctx, tenant)
    params = sampling_params(
        Sampling(
            max_tokens=req.max_output_tokens,
            temperature=req.temperature,
            top_p=req.top_p,
            logprobs=(req.top_logprobs or 0) if LOGPROBS in (req.include or []) else None,
        )
    )
    draft = _Draft(req, ctx.model_name, prompt.output)
    draft.prewarm = bool(req.prompt_cache_options and req.prompt_cache_options.prewarm)
    if params.logprobs is not None:
        draft.token_bytes = ctx.token_bytes
    request = GenerationRequest(
        request_id=draft.id,  # the id the client sees names the request in the books
        token_ids=prompt.rendered.token_ids,
        params=params,
        cache=prompt.cache,
        messages=prompt.rendered.messages,
        endpoint=ENDPOINT,
        api_key_id=caller.key_id,
        output=prompt.output,
        prefill_only=draft.prewarm,
    )
    await ctx.prepare(request, "text.format")
    handle = ctx.submit(request, "input", "text.format")
    conversation = prompt.conversation
    if req.stream:
        events = _stream(handle.outputs(), draft, ctx, request, conversation)
        return StreamingResponse(events, media_type="text/event-stream")
    out = await handle.final(disconnected)
    ctx.replays.record(tenant, out)
    body = _finish(out, draft, ctx, request, conversation)
    return JSONResponse(body)


@dataclass(frozen=True, slots=True)
class ResponsesPrompt:
    """A Responses request as the engine will see it: the rendered prompt, its cache
    settings and output, and the conversation it continues (stored with the reply)."""

    rendered: RenderedChat
    cache: CacheSettings
    output: OutputSpec
    conversation: list[dict[str, Any]]


async def render_request(req: ResponsesRequest, ctx: ServerContext, tenant: str) -> ResponsesPrompt:
    """The prompt of `req`: instructions, then the stored conversation it continues
    (`previous_response_id`), then its input; its tools and `text.format` too."""
    history = _history(req, ctx, tenant)
    new_input = input_messages(req, history)
    system = [{"role": "system", "content": req.instructions}] if req.instructions else []
    tools = responses_tools(req, ctx.canonical_tools)
    fmt = responses_format(req)
    output = responses_output(req, tools, fmt)
    rendered = await ctx.render(system + history + new_input, "input", tools, tenant, fmt)
    cache = openai_cache_settings(
        tenant,
        req.prompt_cache_key,
        req.prompt_cache_retention,
        req.prompt_cache_options,
        marks_of(req.input if isinstance(req.input, list) else [], len(system + history)),
        rendered.messages,
    )
    return ResponsesPrompt(rendered, cache, output, history + new_input)


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


def _finish(
    out: RequestOutput,
    draft: _Draft,
    ctx: ServerContext,
    request: GenerationRequest,
    conversation: list[dict[str, Any]],
) -> dict[str, Any]:
    tenant = request.cache.tenant or ""
    _diagnose(out, draft, ctx, request, tenant)
    body = draft.body(out)
    if draft.req.store is not False:  # a prewarm is continued from its input alone
        replies = [] if draft.prewarm else [_reply(draft, out)]
        ctx.store.put(tenant, body, [*conversation, *replies])
    return body


def _reply(draft: _Draft, out: RequestOutput) -> dict[str, Any]:
    """The answer as the stored conversation's assistant message (its calls with ids)."""
    content, calls = draft.answer(out.text)
    reply: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        reply["calls"] = [[c.name, c.arguments] for c in calls]
        reply["call_ids"] = [draft.ids_of(i)[1] for i in range(len(calls))]
    return reply


def _diagnose(
    out: RequestOutput, draft: _Draft, ctx: ServerContext, request: GenerationRequest, tenant: str
) -> None:
    """Remember this request for later comparisons; compare it with the response named in
    `prompt_cache_options.comparison_response_id`, if any (api/cache_diagnostics.py)."""
    now = remember(ctx, tenant, request, out)
    options = draft.req.prompt_cache_options
    earlier = options.comparison_response_id if options is not None else None
    if earlier is not None:
        found = comparison(ctx, tenant, earlier, now, out)
        draft.diagnostics = openai_diagnostics(found)
        draft.our_diagnostics = extension(found, earlier, out)


async def _stream(
    outputs: AsyncGenerator[RequestOutput, None],
    draft: _Draft,
    ctx: ServerContext,
    request: GenerationRequest,
    conversation: list[dict[str, Any]],
) -> AsyncIterator[str]:
    tenant = request.cache.tenant or ""
    seq = iter(range(1 << 62))

    def ev(kind: str, **data: Any) -> str:
        return sse({"type": kind, "sequence_number": next(seq), **data}, event=kind)

    yield ev("response.created", response=draft.body(None))
    yield ev("response.in_progress", response=draft.body(None))
    items = _Items(draft, ev)
    tools = draft.output_spec.calls_tools
    if not tools and not draft.prewarm:  # a text answer's message opens at once
        for event in items.open_message():
            yield event
    deltas = TextDeltas(())
    calls = ToolStream() if tools else None
    try:
        async with aclosing(outputs):  # leaving early (client gone) aborts the request
            async for out in outputs:
                items.pending.extend(out.new_logprobs)
                for piece in output_pieces(deltas, calls, out):
                    for event in items.piece(piece):
                        yield event
                if out.finished:
                    ctx.replays.record(tenant, out)
                    body = _finish(out, draft, ctx, request, conversation)
                    for event in items.close(body):
                        yield event
    except Exception as exc:  # headers are sent: report in-band with an `error` event
        yield ev("error", code="server_error", message=f"generation failed: {exc}", param=None)


@dataclass(slots=True)
class _Items:
    """The stream's output items as they open and close: the answer's message (its text),
    then each function call (its arguments), in output order."""

    draft: _Draft
    ev: Any
    opened: int = 0  # output items opened so far
    message: int | None = None  # the message's output index while it is open
    text: str = ""
    call: int | None = None  # the open call's index among the calls
    name: str = ""
    arguments: str = ""
    pending: list[TokenLogprob] = field(default_factory=list)  # not yet sent with a delta

    def open_message(self) -> Iterator[str]:
        self.message, self.opened = self.opened, self.opened + 1
        d = self.draft
        yield self.ev(
            "response.output_item.added",
            output_index=self.message,
            item=d.message("", "in_progress"),
        )
        yield self.ev("response.content_part.added", **self._where(), part=d.part(""))

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.draft.item_id, "output_index": self.message, "content_index": 0}

    def piece(self, piece: CallDelta) -> Iterator[str]:
        if piece.index is None:
            if piece.content:
                if self.message is None:
                    yield from self.open_message()
                self.text += piece.content
                logprobs = self.draft.entries(self.pending)
                self.pending.clear()
                yield self.ev(
                    "response.output_text.delta",
                    **self._where(),
                    delta=piece.content,
                    logprobs=logprobs,
                )
            return
        limit = self.draft.req.max_tool_calls
        if limit is not None and piece.index >= limit:
            return  # past max_tool_calls: not an output item
        if piece.name is not None:
            yield from self._close_message(self.draft.message(self.text, "completed"))
            yield from self._close_call(None)
            self.call, self.name, self.arguments = piece.index, piece.name, ""
            self.opened += 1
            item = self.draft.call_item(piece.index, piece.name, "", "in_progress")
            yield self.ev("response.output_item.added", output_index=self.opened - 1, item=item)
            return
        self.arguments += piece.arguments
        item_id = self.draft.ids_of(piece.index)[0]
        yield self.ev(
            "response.function_call_arguments.delta",
            item_id=item_id,
            output_index=self.opened - 1,
            delta=piece.arguments,
        )

    def _close_message(self, item: dict[str, Any]) -> Iterator[str]:
        if self.message is None:
            return
        part = item["content"][0]
        yield self.ev(
            "response.output_text.done", **self._where(), text=self.text, logprobs=part["logprobs"]
        )
        yield self.ev("response.content_part.done", **self._where(), part=part)
        yield self.ev("response.output_item.done", output_index=self.message, item=item)
        self.message = None

    def _close_call(self, item: dict[str, Any] | None) -> Iterator[str]:
        if self.call is None:
            return
        if item is None:
            item = self.draft.call_item(self.call, self.name, self.arguments, "completed")
        index = self.opened - 1
        yield self.ev(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            name=item["name"],
            arguments=item["arguments"],
        )
        yield self.ev("response.output_item.done", output_index=index, item=item)
        self.call = None

    def close(self, body: dict[str, Any]) -> Iterator[str]:
        """Close what is open with the final items, open and close any never streamed (an
        empty answer's message), then the response's last event."""
        output = body["output"]
        for index, item in enumerate(output):
            if item["type"] == "message":
                if self.message is None and index >= self.opened:
                    yield from self.open_message()
                yield from self._close_message(item)
            elif self.call is not None and index == self.opened - 1:
                yield from self._close_call(item)
        kind = "response.incomplete" if body["status"] == "incomplete" else "response.completed"
        yield self.ev(kind, response=body)
