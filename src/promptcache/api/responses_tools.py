"""The Responses API's tool fields: `tools` (function tools; other types refused by name),
`tool_choice`, `parallel_tool_calls`, `max_tool_calls` and `text.format` as an `OutputSpec`;
input items (`function_call`, `function_call_output`) as neutral messages; and the
`function_call` output items."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from promptcache.api.errors import invalid
from promptcache.api.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    JSONObjectFormat,
    ResponsesFunctionTool,
    ResponsesJSONSchemaFormat,
    ResponsesNamedChoice,
    ResponsesRequest,
    message_parts,
)
from promptcache.api.tools import Choice, Format, Tool, Tools, output_spec, tool_set
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice


def function_tools(req: ResponsesRequest) -> list[ResponsesFunctionTool]:
    """The request's tools, each a function tool; any other type is a 400 naming it."""
    out = []
    for i, raw in enumerate(req.tools or []):
        kind = raw.get("type")
        if kind != "function":
            raise invalid(
                f"tool type {kind!r} is not supported here: only function tools are "
                "(built-in tools such as web search, file search, code interpreter, MCP and "
                "computer use run on OpenAI's servers)",
                f"tools[{i}].type",
                "unsupported_tool_type",
            )
        try:
            out.append(ResponsesFunctionTool.model_validate(raw))
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise invalid(
                f"invalid function tool: {exc.errors()[0]['msg']}", f"tools[{i}].{where}"
            ) from exc
    return out


def responses_tools(req: ResponsesRequest, canonical: bool) -> Tools:
    return tool_set(
        [Tool(t.name, t.description, t.parameters) for t in function_tools(req)], canonical
    )


def responses_format(req: ResponsesRequest) -> Format:
    """The request's `text.format`."""
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, JSONObjectFormat):
        return Format(OutputKind.JSON_OBJECT)
    if isinstance(fmt, ResponsesJSONSchemaFormat):
        return Format(OutputKind.JSON_SCHEMA, fmt.schema_, fmt.name, fmt.description)
    return Format()


def responses_output(req: ResponsesRequest, tools: Tools, fmt: Format) -> OutputSpec:
    one = req.parallel_tool_calls is False or req.max_tool_calls == 1
    return output_spec(tools, _choice(req.tool_choice, tools), not one, fmt)


def _choice(choice: str | ResponsesNamedChoice | None, tools: Tools) -> Choice:
    if isinstance(choice, ResponsesNamedChoice):
        return Choice(ToolChoice.NAMED, choice.name)
    if choice is None:
        return Choice(ToolChoice.AUTO if tools else ToolChoice.NONE)
    return Choice(ToolChoice(choice))


def input_messages(req: ResponsesRequest, history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The input items as neutral messages: calls join the assistant turn before them; a
    `function_call_output` must answer a call of the history or the input (else a 400)."""
    if isinstance(req.input, str):
        return [{"role": "user", "content": req.input}]
    if not req.input:
        raise invalid("'input' must not be empty", "input")
    known = {c for m in history for c in m.get("call_ids", ())}
    out: list[dict[str, Any]] = []
    for i, item in enumerate(req.input):
        if isinstance(item, FunctionCallItem):
            turn = out[-1] if out and out[-1]["role"] == "assistant" else None
            if turn is None:
                turn = {"role": "assistant", "content": "", "calls": [], "call_ids": []}
                out.append(turn)
            turn.setdefault("calls", []).append([item.name, item.arguments])
            turn.setdefault("call_ids", []).append(item.call_id)
            known.add(item.call_id)
        elif isinstance(item, FunctionCallOutputItem):
            if item.call_id not in known:
                raise invalid(
                    f"No tool call found for function call output with call_id {item.call_id}.",
                    f"input[{i}].call_id",
                )
            out.append(
                {"role": "tool", "content": message_parts(item.output), "call_id": item.call_id}
            )
        else:
            out.append({"role": item.role, "content": message_parts(item.content)})
    return out


def echo_tools(req: ResponsesRequest) -> list[dict[str, Any]]:
    """The request's tools as the Response object lists them."""
    return [
        {
            **t.model_dump(exclude_none=True),
            "strict": bool(t.strict),
            "parameters": t.parameters or {},
        }
        for t in function_tools(req)
    ]


def echo_choice(req: ResponsesRequest) -> Any:
    choice = req.tool_choice
    if isinstance(choice, ResponsesNamedChoice):
        return choice.model_dump()
    return choice or "auto"


def echo_format(req: ResponsesRequest) -> dict[str, Any]:
    fmt = req.text.format if req.text is not None else None
    if fmt is None:
        return {"type": "text"}
    return fmt.model_dump(by_alias=True, exclude_none=True)
