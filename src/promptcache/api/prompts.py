"""From API messages to the prompt: render with the model's chat template, keeping the token
position where each message and content part ends (`MessageSpan`).

Adapters hand over neutral messages: `role` and `content` (a string or a list of part
strings), plus `calls` on an assistant turn that called tools (`(name, arguments JSON
text)` pairs) and role `tool` for a tool's result; and the request's tools and answer
format. The prompt is, in this order: the tools, the answer's format (a `json_object` or
`json_schema` one), the system prompt, then the conversation. The tools and the format are
shown in one leading "preamble" system message of two content parts: the tools
(`text.tools.tools_prompt`), then the format (`text.formats.format_prompt`, after a blank
line when it follows the tools); either part is left out when there is nothing to show, and
the message with both. Calls render in the one canonical form generation is constrained to,
so an agent's history replays to the tokens the model produced. A template that takes
`tools` itself (the Hugging Face convention) gets them, and the calls, its own way; the
format is then the preamble's only part, a system message of its own before the request's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from promptcache.api.errors import invalid
from promptcache.api.tools import Format, Tools
from promptcache.text.chat import RenderedChat, render_chat
from promptcache.text.tools import (
    canonical_json,
    format_calls,
    ordered_arguments,
    tool_result,
    tools_prompt,
)


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    tools: Tools | None = None,
    replay: Callable[[str], Sequence[int] | None] | None = None,
    fmt: Format | None = None,
) -> RenderedChat:
    """Neutral messages (and tools, and the answer's format) -> prompt ids and spans.

    The `developer` role is OpenAI's newer name for `system`; templates know `system`.
    Messages are rendered in order, so a stable system prompt and history form the prefix.
    The spans are the request's messages' (the preamble has none); `tools_end` is where the
    preamble's tools part ends (None where the preamble shows no tools, or the template
    shows them). `replay` gives the ids the model produced for an assistant content, where
    known (`api.replays`).
    """
    tools = tools or Tools()
    native = bool(tools) and _template_takes_tools(tokenizer)
    normalized = [_message(m, i, tools, native) for i, m in enumerate(messages)]
    preamble = _preamble(tools, native, fmt or Format())
    if preamble:
        normalized.insert(0, {"role": "system", "content": preamble})
    replays = _replays(normalized, replay)
    try:
        shown = list(tools.shown) if native else None
        rendered = render_chat(tokenizer, normalized, shown, replays)
    except Exception as exc:  # the template refused the conversation (roles, order)
        raise invalid(
            f"the model's chat template cannot render these messages: {exc}", "messages"
        ) from exc
    if not preamble:
        return rendered
    head = rendered.messages[0]
    tools_end = head.part_ends[0] if tools and not native and head.part_ends else None
    spans = tuple(replace(s, index=s.index - 1) for s in rendered.messages[1:])
    return RenderedChat(rendered.token_ids, spans, tools_end)


def _preamble(tools: Tools, native: bool, fmt: Format) -> list[str]:
    """The leading system message's parts: the tools (unless the template shows them), then
    the answer's format (after a blank line when it follows the tools); [] for neither."""
    parts = [tools_prompt(list(tools.shown))] if tools and not native else []
    shown = fmt.prompt()
    if shown is not None:
        parts.append(f"\n\n{shown}" if parts else shown)
    return parts


def _replays(
    messages: list[dict[str, Any]], replay: Callable[[str], Sequence[int] | None] | None
) -> dict[int, Sequence[int]]:
    if replay is None:
        return {}
    found = {}
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and isinstance(m["content"], str) and m["content"]:
            ids = replay(m["content"])
            if ids is not None:
                found[i] = ids
    return found


def _template_takes_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def _message(
    m: dict[str, Any], index: int, tools: Tools, native: bool, param: str = "messages"
) -> dict[str, Any]:
    role = "system" if m["role"] == "developer" else m["role"]
    calls = [
        (name, _arguments(args, tools.schemas.get(name), f"{param}[{index}].tool_calls[{j}]"))
        for j, (name, args) in enumerate(m.get("calls", ()))
    ]
    if native:
        out: dict[str, Any] = {"role": role, "content": m["content"]}
        if calls:
            out["tool_calls"] = [
                {"type": "function", "function": {"name": n, "arguments": json.loads(a)}}
                for n, a in calls
            ]
        return out
    if role == "tool":
        return {"role": "user", "content": tool_result(_text(m["content"]))}
    if calls:
        return {"role": role, "content": format_calls(_text(m["content"]), calls)}
    return {"role": role, "content": m["content"]}


def _text(content: str | list[str]) -> str:
    return content if isinstance(content, str) else "".join(content)


def _arguments(arguments: str, schema: dict[str, Any] | None, param: str) -> str:
    """A call's arguments in canonical JSON, keys in its tool's schema order."""
    try:
        value = json.loads(arguments)
    except ValueError as exc:
        raise invalid(f"a tool call's arguments must be JSON: {exc}", param) from exc
    return canonical_json(ordered_arguments(value, schema))
