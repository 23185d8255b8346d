"""A request's tools and output format, from any API's shapes to the engine's `OutputSpec`
and what the prompt shows of them.

Every API adapter reads its own fields (Chat's `tools`/`tool_choice`/`response_format`,
Responses' `tools`/`text.format`, Anthropic's `tools`/`tool_choice`/`output_config.format`)
into the same few values (`Tools`, `Choice`, `Format`), and this module checks them and
builds the spec: a named tool must be one of the tools, a schema must be an object. Tool
definitions are made canonical here when the server's `canonical_tools` setting is on (the
default), so two clients that send the same tools with keys in another order render the
same prompt and share its cached prefix; an answer's schema is always shown canonical
(`Format.prompt`), for the same reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from promptcache.api.errors import invalid
from promptcache.engine.grammar.spec import OutputKind, OutputSpec, ToolChoice, ToolDef
from promptcache.text.formats import format_prompt
from promptcache.text.tools import canonical_json, canonical_tool


@dataclass(frozen=True, slots=True)
class Tool:
    """One function tool, in the fields every API has."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Tools:
    """A request's function tools as the prompt shows them (OpenAI Chat tool objects) and
    each one's parameters schema, by name."""

    shown: tuple[dict[str, Any], ...] = ()
    schemas: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.shown)


def tool_set(tools: list[Tool], canonical: bool, param: str = "tools") -> Tools:
    """The tools as shown and constrained; refuses two tools of one name."""
    shown, schemas = [], {}
    for i, t in enumerate(tools):
        if t.name in schemas:
            raise invalid(f"tool names must be unique: {t.name!r} appears twice", f"{param}[{i}]")
        if t.parameters is not None and t.parameters.get("type", "object") != "object":
            raise invalid("a tool's parameters must be a JSON schema of an object", param)
        function: dict[str, Any] = {"name": t.name}
        if t.description is not None:
            function["description"] = t.description
        if t.parameters is not None:
            function["parameters"] = t.parameters
        tool = {"type": "function", "function": function}
        shown.append(canonical_tool(tool) if canonical else tool)
        schemas[t.name] = t.parameters
    return Tools(tuple(shown), schemas)


@dataclass(frozen=True, slots=True)
class Choice:
    """How the tools may be used: a `ToolChoice` (and the tool a NAMED one forces)."""

    choice: ToolChoice = ToolChoice.AUTO
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Format:
    """The answer's format, in the fields every API has: its kind, a JSON_SCHEMA's schema,
    and the name and description the API gave that schema (Anthropic's has neither)."""

    kind: OutputKind = OutputKind.TEXT
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None

    def prompt(self) -> str | None:
        """The format part of the prompt (`text.formats.format_prompt`); None for text,
        which the prompt does not mention."""
        if self.kind is OutputKind.TEXT:
            return None
        if self.kind is OutputKind.JSON_OBJECT or self.schema is None:
            return format_prompt(None)
        return format_prompt(schema_text(self.schema), self.name, self.description)


def output_spec(
    tools: Tools, choice: Choice, parallel: bool, fmt: Format | None = None
) -> OutputSpec:
    """The engine's constraint; a 400 naming `tool_choice` for a choice the tools cannot
    satisfy."""
    fmt = fmt or Format()
    if not tools and choice.choice in (ToolChoice.REQUIRED, ToolChoice.NAMED):
        raise invalid(f"tool_choice {choice.choice.value!r} needs tools", "tool_choice")
    if choice.choice is ToolChoice.NAMED and choice.name not in tools.schemas:
        raise invalid(
            f"tool_choice names tool {choice.name!r}, which is not in tools", "tool_choice"
        )
    defs = tuple(
        ToolDef(name, schema_text(s) if s is not None else "") for name, s in tools.schemas.items()
    )
    shown = fmt.prompt()
    return OutputSpec(
        kind=fmt.kind,
        schema=schema_text(fmt.schema) if fmt.schema is not None else "",
        tools=defs,
        tool_choice=choice.choice,
        tool_name=choice.name,
        parallel=parallel,
        tools_shown=_digest(canonical_json(list(tools.shown))) if tools else "",
        format_shown=_digest(shown) if shown is not None else "",
    )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def schema_text(schema: dict[str, Any]) -> str:
    """A JSON schema as canonical text (keys sorted, properties kept in order)."""
    return canonical_json(canonical_tool(schema))
