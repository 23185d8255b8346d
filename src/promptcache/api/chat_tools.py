"""Chat Completions' tool fields: the request's tools, tool choice and response format as an
`OutputSpec` (and the format as the prompt shows it), its messages (with `tool_calls` and
`tool` results) as neutral messages, and the answer's tool calls in Chat's shapes, whole or
as streamed `delta.tool_calls`."""

from __future__ import annotations

import secrets
from typing import Any

from promptcache.api.errors import invalid
from promptcache.api.protocol import (
    ChatCompletionRequest,
    ChatCustomTool,
    JSONObjectFormat,
    JSONSchemaFormat,
    NamedToolChoice,
    message_parts,
)
from promptcache.api.tools import Choice, Format, Tool, Tools, output_spec, tool_set
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice
from promptcache.text.tools import CallDelta, ParsedCall


def chat_tools(req: ChatCompletionRequest, canonical: bool) -> Tools:
    """The request's function tools; a custom tool is a 400 naming it."""
    tools = []
    for i, t in enumerate(req.tools or []):
        if isinstance(t, ChatCustomTool):
            raise invalid(
                "custom tools (free-form text input) are not supported here: send a "
                "function tool with a JSON schema",
                f"tools[{i}].type",
                "unsupported_tool_type",
            )
        tools.append(Tool(t.function.name, t.function.description, t.function.parameters))
    return tool_set(tools, canonical)


def chat_format(req: ChatCompletionRequest) -> Format:
    """The request's `response_format` (a `json_schema` one without a schema: any object)."""
    fmt = req.response_format
    if isinstance(fmt, JSONObjectFormat):
        return Format(OutputKind.JSON_OBJECT)
    if isinstance(fmt, JSONSchemaFormat):
        spec = fmt.json_schema
        schema = spec.schema_ or {"type": "object"}
        return Format(OutputKind.JSON_SCHEMA, schema, spec.name, spec.description)
    return Format()


def chat_output(req: ChatCompletionRequest, tools: Tools, fmt: Format) -> OutputSpec:
    """The request's constraint: tools with their choice, and the response format."""
    parallel = req.parallel_tool_calls is not False
    return output_spec(tools, _choice(req.tool_choice, tools), parallel, fmt)


def _choice(choice: str | NamedToolChoice | None, tools: Tools) -> Choice:
    if isinstance(choice, NamedToolChoice):
        return Choice(ToolChoice.NAMED, choice.function.name)
    if choice is None:
        return Choice(ToolChoice.AUTO if tools else ToolChoice.NONE)
    return Choice(ToolChoice(choice))


def chat_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The messages as the renderer takes them; a 400 naming the message for a tool result
    that answers no earlier call, or fields on a role that has none of them."""
    calls: set[str] = set()
    out: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        where = f"messages[{i}]"
        if m.role == "tool":
            if m.tool_call_id is None:
                raise invalid("a tool message needs tool_call_id", f"{where}.tool_call_id")
            if m.tool_call_id not in calls:
                raise invalid(
                    f"tool_call_id {m.tool_call_id!r} answers no tool call of an earlier "
                    "assistant message",
                    f"{where}.tool_call_id",
                )
            out.append({"role": "tool", "content": message_parts(m.content)})
            continue
        if m.tool_call_id is not None:
            raise invalid("only a tool message has tool_call_id", f"{where}.tool_call_id")
        if m.tool_calls and m.role != "assistant":
            raise invalid("only an assistant message has tool_calls", f"{where}.tool_calls")
        if m.content is None and not (m.role == "assistant" and m.tool_calls):
            raise invalid("a message needs content", f"{where}.content")
        message: dict[str, Any] = {"role": m.role, "content": message_parts(m.content)}
        if m.tool_calls:
            calls.update(c.id for c in m.tool_calls)
            message["calls"] = [(c.function.name, c.function.arguments) for c in m.tool_calls]
        out.append(message)
    return out


def call_id() -> str:
    return f"call_{secrets.token_urlsafe(18)}"


def tool_call(call: ParsedCall) -> dict[str, Any]:
    """A call of the answer in Chat's `message.tool_calls` shape."""
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call_id(), "type": "function", "function": function}


def finish_reason(engine_reason: str | None, called: bool) -> str | None:
    """Chat's finish reason: `tool_calls` when the answer ended with calls; an output the
    grammar could not continue ends as `stop` (docs/features/tools.md)."""
    if engine_reason in ("stop", "grammar"):
        return "tool_calls" if called else "stop"
    return engine_reason


def delta_of(piece: CallDelta, ids: dict[int, str]) -> dict[str, Any]:
    """A streamed piece as a chunk's `delta`: content, a call's opening (index, id, name,
    empty arguments) or a piece of its arguments."""
    if piece.index is None:
        return {"content": piece.content}
    if piece.name is not None:
        ids[piece.index] = call_id()
        function = {"name": piece.name, "arguments": ""}
        call = {
            "index": piece.index,
            "id": ids[piece.index],
            "type": "function",
            "function": function,
        }
        return {"tool_calls": [call]}
    return {"tool_calls": [{"index": piece.index, "function": {"arguments": piece.arguments}}]}
