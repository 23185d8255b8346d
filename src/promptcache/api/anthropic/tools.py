"""Anthropic's tool fields: custom `tools` (server tools refused by name), `tool_choice`,
`output_config.format`, and `tool_use` / `tool_result` blocks, as the neutral messages the
renderer takes and the engine's `OutputSpec`; and an answer's calls as `tool_use` blocks.

A user turn's `tool_result` blocks become tool results (each its own rendered turn, an
error one marked `Error: `), its text blocks a user turn; an assistant turn's `tool_use`
blocks are its calls, their `input` rendered in the canonical form generation writes.
`Positions` maps each content block to the rendered message and part that hold it, for
`cache_control` breakpoints.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import ValidationError

from promptcache.api.anthropic.protocol import (
    CustomTool,
    MessagesPrompt,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from promptcache.api.errors import invalid
from promptcache.api.tools import Choice, Format, Tool, Tools, output_spec, tool_set
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice
from promptcache.text.tools import ParsedCall

# (content index among [system, *messages], block index) -> (rendered message, part)
Positions = dict[tuple[int, int], tuple[int, int]]

CHOICES = {"auto": ToolChoice.AUTO, "any": ToolChoice.REQUIRED, "tool": ToolChoice.NAMED}
CHOICES["none"] = ToolChoice.NONE


def custom_tools(req: MessagesPrompt) -> list[CustomTool]:
    """The request's tools, each a custom tool; a server tool is a 400 naming its type."""
    out = []
    for i, raw in enumerate(req.tools or []):
        kind = raw.get("type")
        if kind not in (None, "custom"):
            raise invalid(
                f"tools.{i}: tool type {kind!r} is not supported here: only custom tools "
                "(server tools such as web search, code execution, bash, the text editor and "
                "computer use run on Anthropic's servers)"
            )
        try:
            out.append(CustomTool.model_validate(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise invalid(f"tools.{i}.{where}: {first['msg']}") from exc
    return out


def anthropic_tools(req: MessagesPrompt, canonical: bool) -> Tools:
    tools = [Tool(t.name, t.description, t.input_schema) for t in custom_tools(req)]
    return tool_set(tools, canonical, "tools")


def anthropic_format(req: MessagesPrompt) -> Format:
    """The request's `output_config.format` (a schema without a name or description)."""
    fmt = req.output_config.format if req.output_config is not None else None
    if fmt is None:
        return Format()
    return Format(OutputKind.JSON_SCHEMA, fmt.schema_)


def anthropic_output(req: MessagesPrompt, tools: Tools, fmt: Format) -> OutputSpec:
    tc = req.tool_choice
    if tc is None:
        choice = Choice(ToolChoice.AUTO if tools else ToolChoice.NONE)
    else:
        if tc.type == "tool" and not tc.name:
            raise invalid("tool_choice: type 'tool' needs a name")
        choice = Choice(CHOICES[tc.type], tc.name if tc.type == "tool" else None)
    parallel = not (tc is not None and tc.disable_parallel_tool_use)
    return output_spec(tools, choice, parallel, fmt)


def conversation(req: MessagesPrompt) -> tuple[list[dict[str, Any]], Positions]:
    """System and messages as neutral messages, and where each block went; a 400 for a
    `tool_result` that answers no earlier `tool_use`."""
    out: list[dict[str, Any]] = []
    where: Positions = {}
    if req.system:
        system = req.system if isinstance(req.system, list) else None
        out.append({"role": "system", "content": _texts(req.system)})
        for j in range(len(system or [0])):
            where[(0, j)] = (0, j)
    calls: set[str] = set()
    first = 1 if req.system else 0
    for i, m in enumerate(req.messages):
        blocks = m.content if isinstance(m.content, list) else None
        if blocks is None:
            where[(first + i, 0)] = (len(out), 0)
            out.append({"role": m.role, "content": m.content})
        elif m.role == "assistant":
            _assistant(blocks, first + i, out, where, calls)
        else:
            _user(blocks, i, first + i, out, where, calls)
    return out, where


def _assistant(
    blocks: list[Any], index: int, out: list[dict[str, Any]], where: Positions, calls: set[str]
) -> None:
    texts = [b.text for b in blocks if isinstance(b, TextBlock)]
    uses = [b for b in blocks if isinstance(b, ToolUseBlock)]
    at = len(out)
    message: dict[str, Any] = {"role": "assistant", "content": texts}
    if uses:  # the turn renders as one text: every block ends with it
        message = {"role": "assistant", "content": "".join(texts)}
        message["calls"] = [[u.name, json.dumps(u.input)] for u in uses]
        calls.update(u.id for u in uses)
    text_index = 0
    for j, b in enumerate(blocks):
        if isinstance(b, ToolResultBlock):
            raise invalid(f"messages.{index}.content.{j}: tool_result blocks belong to user turns")
        where[(index, j)] = (at, 0 if uses else text_index)
        text_index += isinstance(b, TextBlock)
    out.append(message)


def _user(
    blocks: list[Any],
    i: int,
    index: int,
    out: list[dict[str, Any]],
    where: Positions,
    calls: set[str],
) -> None:
    text: dict[str, Any] | None = None
    for j, b in enumerate(blocks):
        if isinstance(b, ToolUseBlock):
            raise invalid(f"messages.{i}.content.{j}: tool_use blocks belong to assistant turns")
        if isinstance(b, ToolResultBlock):
            if b.tool_use_id not in calls:
                raise invalid(
                    f"messages.{i}.content.{j}: tool_use_id {b.tool_use_id!r} answers no "
                    "tool_use block of an earlier assistant turn"
                )
            text = None
            where[(index, j)] = (len(out), 0)
            out.append({"role": "tool", "content": _result(b)})
            continue
        if text is None:
            text = {"role": "user", "content": []}
            out.append(text)
        where[(index, j)] = (len(out) - 1, len(text["content"]))
        text["content"].append(b.text)


def _texts(content: str | list[TextBlock]) -> str | list[str]:
    return content if isinstance(content, str) else [b.text for b in content]


def _result(block: ToolResultBlock) -> str:
    content = block.content
    text = (
        ""
        if content is None
        else content
        if isinstance(content, str)
        else "".join(b.text for b in content)
    )
    return f"Error: {text}" if block.is_error else text


def tool_use_block(call: ParsedCall) -> dict[str, Any]:
    """A call of the answer as Anthropic's `tool_use` block (`input` {} while streaming)."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:  # cut short by max_tokens: what was written is not an object yet
        arguments = {}
    return {
        "type": "tool_use",
        "id": new_tool_use_id(),
        "name": call.name,
        "input": arguments,
        "caller": {"type": "direct"},
    }


def new_tool_use_id() -> str:
    return f"toolu_{secrets.token_urlsafe(18)}"
