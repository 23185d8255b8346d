"""Tool calls as prompt text: the default (Hermes-style) format, canonical JSON, and parsing
the model's output back into calls, whole or as it streams.

A model whose chat template takes no `tools` is shown its tools in one system message
(`tools_prompt`), first in the prompt, and writes each call as

    <tool_call>
    {"name": "NAME", "arguments": {...}}
    </tool_call>

with calls separated by one newline. Generation is constrained to exactly this form
(`engine.grammar`), with the arguments in canonical JSON (`canonical_json`: `", "` and `": "`
separators, no other whitespace, non-ASCII kept, keys in the schema's property order), and
history is rendered in the same form (`format_call`), so an agent's earlier turns render
to the tokens the model produced and the next turn reuses them from the cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CALL_OPEN = "<tool_call>\n"
CALL_HEAD = '{"name": "'
ARGS_HEAD = '", "arguments": '
CALL_CLOSE = "}\n</tool_call>"
CALL_SEPARATOR = "\n"
TRIGGER = "<tool_call>"
SEPARATORS = (", ", ": ")


@dataclass(frozen=True, slots=True)
class ParsedCall:
    """One call read back from the output: the tool's name and its arguments' JSON text."""

    name: str
    arguments: str


def canonical_json(value: Any) -> str:
    """The one serialization we render and constrain generation to."""
    return json.dumps(value, ensure_ascii=False, separators=SEPARATORS)


def canonical_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool definition with every object's keys sorted, except the members of a schema's
    `properties`, whose order is the order the model writes arguments in."""
    return _sorted_keys(tool)


def _sorted_keys(value: Any, keep_order: bool = False) -> Any:
    if isinstance(value, dict):
        keys = list(value) if keep_order else sorted(value)
        return {k: _sorted_keys(value[k], k == "properties" and not keep_order) for k in keys}
    if isinstance(value, list):
        return [_sorted_keys(v) for v in value]
    return value


def ordered_arguments(arguments: Any, schema: dict[str, Any] | None) -> Any:
    """`arguments` with object keys in the order of the schema's `properties` (recursively;
    keys the schema does not name follow in their own order), as generation writes them."""
    if not isinstance(schema, dict):
        return arguments
    if isinstance(arguments, dict):
        props = schema.get("properties")
        if not isinstance(props, dict):
            return arguments
        order = [k for k in props if k in arguments] + [k for k in arguments if k not in props]
        return {k: ordered_arguments(arguments[k], props.get(k)) for k in order}
    items = schema.get("items")
    if isinstance(arguments, list) and isinstance(items, dict):
        return [ordered_arguments(a, items) for a in arguments]
    return arguments


def format_call(name: str, arguments: str) -> str:
    """One call in the prompt format; `arguments` is JSON text (made canonical by the caller)."""
    return f"{CALL_OPEN}{CALL_HEAD}{name}{ARGS_HEAD}{arguments}{CALL_CLOSE}"


def format_calls(content: str | None, calls: list[tuple[str, str]]) -> str:
    """An assistant turn: its text (if any), then its calls, one newline apart."""
    rendered = CALL_SEPARATOR.join(format_call(n, a) for n, a in calls)
    return (content or "") + rendered


def tools_prompt(tools: list[dict[str, Any]]) -> str:
    """The system message that shows the model its tools (OpenAI Chat tool objects)."""
    listed = "\n".join(canonical_json(t) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "For each function call, return a json object with function name and arguments "
        "within <tool_call></tool_call> XML tags:\n"
        f'{CALL_OPEN}{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
    )


def tool_result(content: str) -> str:
    """A tool's result as the user turn that carries it back to the model."""
    return f"<tool_response>\n{content}\n</tool_response>"


def parse_output(text: str) -> tuple[str, list[ParsedCall]]:
    """The output's text before its first call, and its calls in order.

    A call cut short (by `max_tokens`) ends the calls with the arguments written so far, as
    a stream would have sent them; one cut before its name was written is left out.
    """
    start = text.find(TRIGGER)
    if start < 0:
        return text, []
    content, calls, pos = text[:start], [], start
    while text.startswith(CALL_OPEN + CALL_HEAD, pos):
        call, end = _parse_call(text, pos)
        if call is None:
            break
        calls.append(call)
        pos = end + (len(CALL_SEPARATOR) if text.startswith(CALL_SEPARATOR, end) else 0)
    return content, calls


def _parse_call(text: str, pos: int) -> tuple[ParsedCall | None, int]:
    name_start = pos + len(CALL_OPEN) + len(CALL_HEAD)
    name_end = text.find(ARGS_HEAD, name_start)
    if name_end < 0:
        return None, pos
    name, args_start = text[name_start:name_end], name_end + len(ARGS_HEAD)
    close = text.find(CALL_CLOSE, args_start)
    # The arguments end at the first close that leaves valid JSON (the close text may occur
    # inside a string).
    while close >= 0:
        arguments = text[args_start:close]
        if is_json(arguments):
            return ParsedCall(name, arguments), close + len(CALL_CLOSE)
        close = text.find(CALL_CLOSE, close + 1)
    return ParsedCall(name, text[args_start:]), len(text)  # cut short


def is_json(text: str) -> bool:
    """Whether `text` is whole JSON (a call's arguments not cut short)."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class CallDelta:
    """A streamed piece: text of the content, or of call `index` (its name once, when the
    call opens, then pieces of its arguments)."""

    index: int | None = None
    name: str | None = None
    arguments: str = ""
    content: str = ""


@dataclass(slots=True)
class ToolStream:
    """Reads the output as it grows and reports content and call pieces as soon as they are
    certain: text that may be the start of a call, or the end of one, is held back."""

    text: str = ""
    pos: int = 0  # everything before this is reported
    state: str = "content"  # content | head | args
    calls: int = 0
    args_start: int = 0  # where the open call's arguments begin

    def feed(self, text: str, final: bool = False) -> list[CallDelta]:
        """The pieces that the output `text` (the whole output so far) adds."""
        self.text = text
        out: list[CallDelta] = []
        while True:
            piece = self._step(final)
            if piece is None:
                return out
            if piece.content or piece.name is not None or piece.arguments:
                out.append(piece)

    def _step(self, final: bool) -> CallDelta | None:
        text = self.text
        if self.state == "content":
            if self.calls:  # as `parse_output`: the content is the text before the calls
                return self._skip_to_call()
            at = text.find(TRIGGER, self.pos)
            if at >= 0:
                piece = CallDelta(content=text[self.pos : at])
                self.pos, self.state = at, "head"
                return piece
            end = len(text) if final else _safe_end(text, self.pos, TRIGGER)
            if end <= self.pos:
                return None
            piece = CallDelta(content=text[self.pos : end])
            self.pos = end
            return piece
        if self.state == "head":
            name_start = self.pos + len(CALL_OPEN) + len(CALL_HEAD)
            name_end = text.find(ARGS_HEAD, name_start)
            if name_end < 0:
                return None
            self.state, self.pos = "args", name_end + len(ARGS_HEAD)
            self.args_start = self.pos
            self.calls += 1
            return CallDelta(self.calls - 1, text[name_start:name_end])
        close = text.find(CALL_CLOSE, self.pos)
        while close >= 0 and not is_json(text[self.args_start : close]):
            close = text.find(CALL_CLOSE, close + 1)  # that one was inside a string
        if close >= 0:
            piece = CallDelta(self.calls - 1, arguments=text[self.pos : close])
            self.pos = close + len(CALL_CLOSE)
            self.state = "content"
            return piece
        end = len(text) if final else _safe_end(text, self.pos, CALL_CLOSE)
        if end <= self.pos:
            return None
        piece = CallDelta(self.calls - 1, arguments=text[self.pos : end])
        self.pos = end
        return piece

    def _skip_to_call(self) -> CallDelta | None:
        at = self.text.find(TRIGGER, self.pos)
        if at < 0:
            return None
        self.pos, self.state = at, "head"
        return CallDelta()


def _safe_end(text: str, pos: int, marker: str) -> int:
    """How far text[pos:] can be reported: all but a tail that could begin `marker`."""
    for keep in range(min(len(marker) - 1, len(text) - pos), 0, -1):
        if marker.startswith(text[len(text) - keep :]):
            return len(text) - keep
    return len(text)
