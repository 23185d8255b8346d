"""What a request's output must look like, protocol-neutral: free text, any JSON object,
JSON matching a schema, or tool calls (with the tool choice), as every API asks for it.

An `OutputSpec` travels inside the `GenerationRequest` (to workers too, as JSON), so the
router, its workers and the ledger see the same constraint whichever API received it.
Schemas are kept as canonical JSON text, which is also the key of the compiled grammar.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass


class OutputKind(enum.Enum):
    TEXT = "text"  # unconstrained
    JSON_OBJECT = "json_object"  # any JSON object
    JSON_SCHEMA = "json_schema"  # JSON valid against `schema`


class ToolChoice(enum.Enum):
    NONE = "none"  # tools are shown, never called
    AUTO = "auto"  # text, or calls (constrained once one opens)
    REQUIRED = "required"  # one call or more, from the first token
    NAMED = "named"  # exactly `OutputSpec.tool_name`, from the first token


@dataclass(frozen=True, slots=True)
class ToolDef:
    """A function tool: its name and its parameters' JSON schema (canonical JSON text;
    "" when the tool declared none: any JSON object)."""

    name: str
    parameters: str = ""


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """The constraint on one request's output.

    Attributes:
        kind: the shape of a text answer (`schema` holds the JSON schema of JSON_SCHEMA).
        tools: the function tools the model may call; empty for none.
        tool_choice: how the tools may be used (ignored without tools).
        tool_name: the tool a NAMED choice forces.
        parallel: whether more than one call is allowed.
        tools_shown: a digest of the tools as the prompt shows them (descriptions
            included), set by the API layer; "" where no prompt showed them.
        format_shown: the same for the answer's format (its name and description too).
    """

    kind: OutputKind = OutputKind.TEXT
    schema: str = ""
    tools: tuple[ToolDef, ...] = ()
    tool_choice: ToolChoice = ToolChoice.AUTO
    tool_name: str | None = None
    parallel: bool = True
    tools_shown: str = ""
    format_shown: str = ""

    @property
    def calls_tools(self) -> bool:
        """Whether the output may hold tool calls."""
        return bool(self.tools) and self.tool_choice is not ToolChoice.NONE

    @property
    def constrained(self) -> bool:
        """Whether generation runs under a grammar at all."""
        return self.calls_tools or self.kind is not OutputKind.TEXT

    def tools_digest(self) -> str:
        """A digest of the tools ("" for none): what `tools_changed` compares. The tools as
        the prompt shows them where the API said (`tools_shown`), else their names and
        parameters."""
        if not self.tools:
            return ""
        if self.tools_shown:
            return self.tools_shown
        text = "\x1e".join(f"{t.name}\0{t.parameters}" for t in self.tools)
        return hashlib.sha256(text.encode()).hexdigest()

    def format_digest(self) -> str:
        """A digest of the answer's format ("" for text): what `format_changed` compares.
        The format as the prompt shows it where the API said (`format_shown`), else its
        kind and schema."""
        if self.kind is OutputKind.TEXT:
            return ""
        if self.format_shown:
            return self.format_shown
        return hashlib.sha256(f"{self.kind.value}\0{self.schema}".encode()).hexdigest()

    def key(self) -> str:
        """A digest naming this constraint (the compiled grammar's cache key)."""
        parts = [self.kind.value, self.schema, self.tool_choice.value, str(self.tool_name)]
        parts += [str(self.parallel)] + [f"{t.name}\0{t.parameters}" for t in self.tools]
        return hashlib.sha256("\x1e".join(parts).encode()).hexdigest()
